"""Shell completion of target and family names, attached to every command's --target and
--family options when the command is loaded (`eval "$(_EDGEKD_COMPLETE=bash_source edgekd)"`)."""
from __future__ import annotations

import click


def _complete_target(ctx, param, incomplete: str):
    """Target names; a path-like word completes as a file (a target YAML)."""
    from click.shell_completion import CompletionItem

    if "/" in incomplete or incomplete.startswith("."):
        return [CompletionItem(incomplete, type="file")]
    from ..targets import target_names

    return [CompletionItem(n) for n in target_names() if n.startswith(incomplete)]


def _complete_family(ctx, param, incomplete: str):
    from click.shell_completion import CompletionItem

    from ..models.spec import family_names

    return [CompletionItem(n) for n in ["auto", *family_names()] if n.startswith(incomplete)]


COMPLETE = {"--target": _complete_target, "--family": _complete_family}


def with_completion(command: click.Command) -> click.Command:
    """``command`` with target and family names completed (an option's own completion wins)."""
    for p in command.params:
        fn = next((COMPLETE[o] for o in p.opts if o in COMPLETE), None)
        if fn is not None and getattr(p, "_custom_shell_complete", None) is None:
            p._custom_shell_complete = fn  # what click's shell_complete= argument sets
    return command
