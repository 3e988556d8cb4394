"""Rendering the templates people send, in a few worker processes, each render bounded.

A definition's title and payload, an email's subject and body, a reminder's
message: Jinja's sandbox keeps them from Python's internals but not from CPU
and memory. So they render here, never on an event loop:

- in a small pool of child processes (``template_render_processes``), started
  on first use and stopped with the process (``shutdown``, and at exit);
- each render under a wall-clock deadline (``template_render_timeout_seconds``):
  a child that overruns is killed and replaced; a CPU-time limit in the child
  stops it too should this process die meanwhile;
- with the child's address space limited (``template_render_memory_mb``) and
  the output capped (``template_max_output_chars``).

The caller awaits the answer on a thread, so its event loop (the API's, or the
worker's with every heartbeat of that process) keeps running. A render over a
bound is a ``TemplateProblem`` with ``limit`` set: the API answers 422, an
activity fails without retrying (no retry renders it any cheaper).

The child gets its jobs pickled (from us) and answers in JSON, so a child that
a template took over could not make this process run anything.
"""

import asyncio
import atexit
import json
import os
import pickle
import queue
import resource
import select
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from jinja2 import TemplateError

from followthrough.infra.template_sandbox import RenderLimitExceeded, environment, render_capped
from followthrough.infra.templating import MissingVariables, TemplateProblem, render_tree

_HEADER = struct.Struct(">I")
_READY = b"ready\n"
# A child that has not started by then (a loaded machine, a cold disk) is an error of ours, not the template's.
_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class RenderLimits:
    timeout_seconds: float = 5.0
    memory_mb: int = 512
    max_output_chars: int = 1_000_000

    @classmethod
    def of(cls, settings: Any) -> "RenderLimits":
        return cls(timeout_seconds=settings.template_render_timeout_seconds,
                   memory_mb=settings.template_render_memory_mb,
                   max_output_chars=settings.template_max_output_chars)


class RenderPoolError(RuntimeError):
    """The pool could not render at all (a child would not start): not the template's fault."""


async def render_trees(trees: list[tuple[Any, bool]], variables: dict[str, Any], limits: RenderLimits) -> list[Any]:
    """Each ``(tree, native)`` rendered as followthrough.infra.templating.render_tree would, in a bounded child.

    Raises MissingVariables, or TemplateProblem (``limit`` set when over a bound)."""
    return await _pool().render({"op": "trees", "trees": trees, "variables": variables}, limits)


async def render_strings(sources: list[str], variables: dict[str, Any], limits: RenderLimits) -> list[str]:
    """Template strings rendered to text (stripped) in a bounded child; raises TemplateProblem located by index."""
    return await _pool().render({"op": "strings", "sources": sources, "variables": variables}, limits)


def shutdown() -> None:
    """Stop the pool's children (a render still running is killed); the next render starts it anew."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.close()


# ---- the parent's side --------------------------------------------------------

class _Child:
    def __init__(self) -> None:
        # A session of its own: Ctrl-C in a terminal goes to the parent, which stops the children.
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from followthrough.infra.render_pool import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        try:
            ready = self._read(len(_READY), _now() + _START_TIMEOUT)
        except TemplateProblem:  # it exited
            ready = None
        if ready != _READY:
            self.kill()
            raise OSError("the template renderer did not start")

    def ask(self, job: dict[str, Any], timeout: float, max_reply: int) -> dict[str, Any] | None:
        """The child's answer, or None when it did not answer in time (it is then killed)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        data = pickle.dumps(job)
        self.process.stdin.write(_HEADER.pack(len(data)) + data)
        self.process.stdin.flush()
        deadline = _now() + timeout
        header = self._read(_HEADER.size, deadline)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header)
        if size > max_reply:
            self.kill()
            raise TemplateProblem((), "template is over a limit: the rendered output is too large", limit=True)
        reply = self._read(size, deadline)
        return None if reply is None else json.loads(reply)

    def _read(self, size: int, deadline: float) -> bytes | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        while size:
            left = deadline - _now()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                return None
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:  # the child died: a CPU limit, or something killed it
                self.kill()
                raise TemplateProblem((), "template is over a limit: its render was stopped", limit=True)
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class _Pool:
    def __init__(self, size: int) -> None:
        self._idle: queue.Queue[_Child | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # a slot whose child starts when first needed
        # Threads that wait for a child's answer (or for a free child): waiting costs no CPU.
        self._waiters = max(4, size * 4)
        self._threads = ThreadPoolExecutor(max_workers=self._waiters, thread_name_prefix="render")
        self._children: set[_Child] = set()
        self._lock = threading.Lock()
        self._closed = False

    async def render(self, job: dict[str, Any], limits: RenderLimits) -> Any:
        job = job | {"limits": asdict(limits)}
        reply = await asyncio.get_running_loop().run_in_executor(self._threads, self._run, job, limits)
        if "ok" in reply:
            return reply["ok"]
        if "missing" in reply:
            raise MissingVariables(reply["missing"])
        problem = reply["problem"]
        raise TemplateProblem(tuple(problem["path"]), problem["message"], limit=problem["limit"])

    def _run(self, job: dict[str, Any], limits: RenderLimits) -> dict[str, Any]:
        child = self._idle.get()
        try:
            if child is None or not child.alive():
                child = self._start()
            # Text of the output limit, as JSON may escape it (each character up to 12 bytes), plus the frame.
            reply = child.ask(job, limits.timeout_seconds, 12 * limits.max_output_chars + 65536)
            if reply is None:
                child = None
                return {"problem": {"path": [], "limit": True, "message": (
                    f"template is over a limit: it did not render within {limits.timeout_seconds:g} seconds "
                    "(template_render_timeout_seconds)")}}
            if reply.pop("retire", False):  # out of memory: a fresh process for the next render
                child.kill()
                child = None
            return reply
        except TemplateProblem:
            child = None  # killed already
            if self._closed:  # stopped by shutdown, not by a limit: another process may render it
                raise RenderPoolError("the template renderer was shut down during the render") from None
            raise
        except (OSError, ValueError) as err:  # the child's pipe broke: start another next time
            if child is not None:
                child.kill()
            child = None
            raise RenderPoolError(f"the template renderer failed: {err}") from err
        finally:
            self._release(child)

    def _start(self) -> _Child:
        if self._closed:
            raise RenderPoolError("the template renderer is shut down")
        try:
            child = _Child()  # outside the lock: starting takes a moment
        except OSError as err:
            raise RenderPoolError(f"the template renderer did not start: {err}") from err
        with self._lock:
            if self._closed:
                child.kill()
                raise RenderPoolError("the template renderer is shut down")
            self._children.add(child)
        return child

    def _release(self, child: _Child | None) -> None:
        with self._lock:
            if child is not None and self._closed:
                child.kill()
            if child is None or not child.alive():
                self._children = {c for c in self._children if c.alive()}
                child = None
        self._idle.put(child)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children, self._children = self._children, set()
        for child in children:
            child.kill()
        for _ in range(self._waiters):  # wake every render waiting for a child: it fails
            self._idle.put(None)
        self._threads.shutdown(wait=False, cancel_futures=True)


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()
_SIZE = 2


def configure(settings: Any) -> None:
    """Take the pool's size from the settings (before its first render)."""
    global _SIZE
    _SIZE = max(1, settings.template_render_processes)


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool(_SIZE)
            atexit.register(shutdown)
        return _POOL


def _now() -> float:
    return time.monotonic()


# ---- the child's side ---------------------------------------------------------

def serve() -> None:
    """A child's loop: read a job, render it under its limits, answer; exit when the parent closes stdin."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed may corrupt the answers
    environment()
    stdout.write(_READY)  # started: the parent's deadlines count from the first job
    stdout.flush()
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        job = pickle.loads(stdin.read(_HEADER.unpack(header)[0]))
        limits = RenderLimits(**job["limits"])
        _limit_self(limits)
        try:
            reply = _answer(job, limits)
            data = json.dumps(reply, allow_nan=False, default=str).encode()
        except MemoryError:
            reply = {"retire": True, "problem": _out_of_memory([], limits)}
            data = json.dumps(reply).encode()
        stdout.write(_HEADER.pack(len(data)) + data)
        stdout.flush()
        if reply.get("retire"):  # after a MemoryError, a fresh process is the safe one
            return


def _out_of_memory(path: list[Any], limits: RenderLimits) -> dict[str, Any]:
    return {"path": path, "limit": True, "message": "template is over a limit: it needs more memory than a "
            f"render may use ({limits.memory_mb} MiB, template_render_memory_mb)"}


def _answer(job: dict[str, Any], limits: RenderLimits) -> dict[str, Any]:
    results: list[Any] = []
    try:
        if job["op"] == "trees":
            results = [render_tree(tree, job["variables"], native, limits.max_output_chars)
                       for tree, native in job["trees"]]
        else:
            for index, source in enumerate(job["sources"]):
                try:
                    env = environment()
                    env.begin(limits.max_output_chars)
                    results.append(render_capped(env, env.from_string(source), job["variables"]).strip())
                except RenderLimitExceeded as err:
                    raise TemplateProblem((index,), f"template is over a limit: {err.message}", limit=True) from None
                except MemoryError:
                    return {"retire": True, "problem": _out_of_memory([index], limits)}
                except RecursionError:
                    raise TemplateProblem((index,), "template is over a limit: what it builds is nested too deeply "
                                          "to render", limit=True) from None
                except TemplateError as err:
                    raise TemplateProblem((index,), str(err)) from None
                except Exception as err:  # noqa: BLE001 - anything a template can raise (1/0, a bad filter, ...)
                    raise TemplateProblem((index,), f"{type(err).__name__}: {err}") from None
    except MissingVariables as err:
        return {"missing": err.names}
    except TemplateProblem as err:
        if err.limit and "(template_render_memory_mb)" in err.message:
            return {"retire": True, "problem": _out_of_memory(list(err.path), limits)}
        return {"problem": {"path": list(err.path), "message": err.message, "limit": err.limit}}
    size = sum(len(s) for s in _strings(results))
    if size > limits.max_output_chars:
        return {"problem": {"path": [], "limit": True, "message": (
            f"template is over a limit: the rendered text ({size} characters) exceeds "
            f"{limits.max_output_chars} characters (template_max_output_chars)")}}
    return {"ok": results}
def _strings(tree: Any) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in _strings(v)]
    return []


def _limit_self(limits: RenderLimits) -> None:
    """This render's bounds on the child itself: its address space, and CPU seconds from now."""
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, resource.getrlimit(resource.RLIMIT_AS)[1]))
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + limits.timeout_seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.getrlimit(resource.RLIMIT_CPU)[1]))
