"""Chat formats: how chat messages become the prompt text of an in-process model.

Why here and not llama-cpp-python's own: its ``gemma`` format drops system messages (the whole
agent prompt), so Gemma's own template is followed; other formats are llama-cpp-python's, and
a GGUF's Jinja template is used when the profile names none.
"""

from __future__ import annotations

from typing import Any

from engine.core.errors import BackendError, ConfigError


def format_gemma(messages: list[dict[str, str]]) -> str:
    """Gemma's chat format, with system messages folded into the first user turn.

    Gemma has no system role. Its own chat template (the ``tokenizer_config.json`` Jinja
    template) prepends the system text to the first user message followed by a blank line;
    llama-cpp-python's ``gemma`` format instead *drops* system messages, which would silently
    lose the whole agent prompt, so this follows Gemma's template. The BOS token is added by the
    tokenizer, not written here.
    """
    system = "\n\n".join(m["content"].strip() for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if not turns or turns[0]["role"] != "user":
        turns = [{"role": "user", "content": ""}, *turns]
    out = []
    for i, m in enumerate(turns):
        role = "model" if m["role"] == "assistant" else "user"
        content = m["content"].strip()
        if i == 0 and system:
            content = f"{system}\n\n{content}" if content else system
        out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    out.append("<start_of_turn>model\n")
    return "".join(out)


def _stock_formatter(name: str) -> Any:
    from llama_cpp import llama_chat_format

    for candidate in (name.replace("-", "_"), name.replace("-", "")):
        fn = getattr(llama_chat_format, f"format_{candidate}", None)
        if callable(fn):
            return fn
    return None


def known_chat_formats() -> list[str]:
    """The chat format names a profile's ``chat_format`` may take."""
    from llama_cpp import llama_chat_format

    names = {n[len("format_") :] for n in dir(llama_chat_format) if n.startswith("format_")}
    return sorted(names | {"gemma"})


def format_chat(
    messages: list[dict[str, str]],
    *,
    chat_format: str | None,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    profile_name: str = "",
) -> tuple[str, bool]:
    """The prompt text of ``messages`` and whether it already contains the BOS token.

    The profile's ``chat_format`` wins when set; else the GGUF's own Jinja template.

    Raises:
        ConfigError: no template at all, or an unknown ``chat_format``.
        BackendError: the GGUF's template failed to render these messages.
    """
    label = f"profile {profile_name!r}: " if profile_name else ""
    if chat_format:
        if chat_format == "gemma":
            return format_gemma(messages), False
        fn = _stock_formatter(chat_format)
        if fn is None:
            raise ConfigError(
                f"{label}unknown chat_format {chat_format!r}",
                hint=f"use one of: {', '.join(known_chat_formats())}; or remove chat_format to "
                "use the GGUF's own chat template",
            )
        response = fn(messages=messages)
        return str(response.prompt), bool(getattr(response, "added_special", False))
    if template:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            response = Jinja2ChatFormatter(
                template=template, eos_token=eos_token, bos_token=bos_token
            )(messages=messages)  # type: ignore[arg-type]
        except Exception as exc:  # a template's own error, reported with its words
            raise BackendError(
                f"{label}the GGUF's chat template failed: {exc}",
                hint="set chat_format in the profile to override the model's template",
            ) from exc
        return str(response.prompt), True
    raise ConfigError(
        f"{label}the GGUF has no chat template and the profile sets no chat_format",
        hint=f"set chat_format in the profile (one of: {', '.join(known_chat_formats())})",
    )


__all__ = ["format_chat", "format_gemma", "known_chat_formats"]
