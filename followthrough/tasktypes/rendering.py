"""Rendering the task types' shipped templates (templates/), in-process: the template is ours, only its
data is not, and the sandbox bounds what the data can make it do. A template a person sends (an email's
body, a definition's payload) renders in followthrough/infra/render_pool.py instead."""

from typing import Any

from followthrough.infra.template_sandbox import TEMPLATES, environment, render_capped

__all__ = ["TEMPLATES", "environment", "render"]


def render(template_name: str, variables: dict[str, Any]) -> str:
    env = environment()
    env.begin()
    return render_capped(env, env.get_template(template_name), variables).strip()

