"""One module per system followthrough replaces (the seeds, docs/api.md: Calls of the systems followthrough
replaces): each replays that system's HTTP calls as its documents write them."""
