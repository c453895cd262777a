"""llguidance's matcher over the bundled tokenizer: does a grammar admit a string?"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def admits(bundled_folder):
    llg = pytest.importorskip("llguidance")
    tok = llg.LLTokenizer((bundled_folder / "tokenizer.json").read_text())

    def check(lark: str, text: str) -> bool:
        grammar = llg.LLMatcher.grammar_from_lark(lark)
        failed, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, tok)
        assert not failed, messages
        m = llg.LLMatcher(tok, grammar, log_level=0)
        return m.consume_tokens(tok.tokenize_str(text)) and not m.is_error() and m.is_accepting()

    return check
