"""Tokenizer: HF `tokenizers` for text <-> ids, Jinja chat templates, streaming detokenisation.

Chat templates are rendered the way `transformers.apply_chat_template` renders them (same Jinja
environment settings, filters and globals), so prompts match the ones the model was trained on.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from lmlab.errors import LmlabError

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class Tokenizer:
    def __init__(self, backend, config: dict | None = None, chat_template: str | None = None):
        self.backend = backend  # a tokenizers.Tokenizer
        self.config = config or {}
        self.chat_template = chat_template
        self.special_tokens = {k: _token_text(self.config[k]) for k in SPECIAL_TOKEN_KEYS
                               if self.config.get(k) is not None}

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        from tokenizers import Tokenizer as Backend

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise LmlabError(f"{folder}: no tokenizer.json (only fast tokenizers are supported)")
        try:
            backend = Backend.from_file(str(path))
        except Exception as e:  # tokenizers raises bare Exceptions on malformed files
            raise LmlabError(f"{path}: cannot read tokenizer ({e})") from None
        config = _read_json(folder / "tokenizer_config.json")
        for k, v in _read_json(folder / "special_tokens_map.json").items():
            config.setdefault(k, v)
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        elif (folder / "chat_template.json").is_file():
            template = _read_json(folder / "chat_template.json").get("chat_template")
        if isinstance(template, list):  # named templates; "default" is the chat one
            template = {t["name"]: t["template"] for t in template}.get("default")
        return cls(backend, config, template)

    # ---- ids -----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        eos = self.special_tokens.get("eos_token")
        return None if eos is None else self.token_id(eos)

    @property
    def bos_token_id(self) -> int | None:
        bos = self.special_tokens.get("bos_token")
        return None if bos is None else self.token_id(bos)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---- chat ----------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            **kwargs) -> str:
        if not self.chat_template:
            raise LmlabError("this model has no chat template; pass raw text instead (--raw)")
        for m in messages:
            if not isinstance(m, dict) or "role" not in m:
                raise LmlabError(f"chat messages must be dicts with 'role' and 'content', got {m!r}")
        import jinja2

        # transformers always passes tools and documents (None when unused) plus the special tokens.
        variables = {"tools": None, "documents": None, **self.special_tokens, **kwargs}
        try:
            return _compile(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, **variables)
        except jinja2.TemplateError as e:
            raise LmlabError(f"chat template rejected the conversation: {e}") from None

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        # The template already writes any BOS it wants, so no special tokens are added on top.
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False)

    def stream(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Turns generated ids into text pieces as they arrive.

    Decoding each id alone breaks multi-byte characters (a byte-level BPE token can hold half an
    emoji) and loses SentencePiece's leading spaces. So we decode a short window that starts a
    little before the new ids and emit only what the window adds, and hold text back while it
    ends in an incomplete character (U+FFFD).
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # window start
        self.read = 0  # ids before this were already emitted

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        now = self.tokenizer.decode(self.ids[self.prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (call once at the end)."""
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        now = self.tokenizer.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return now[len(before):]


def _token_text(value) -> str:
    return value["content"] if isinstance(value, dict) else str(value)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LmlabError(f"{path}: invalid JSON ({e})") from None


@lru_cache(maxsize=16)
def _compile(source: str):
    """A Jinja environment configured like transformers' chat-template renderer."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters, which would change the prompt.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise LmlabError(f"chat template does not parse: {e}") from None
