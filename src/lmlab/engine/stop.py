"""Stop strings over streamed text: find them across token boundaries, and never emit text that
might turn out to be the start of a stop string."""

from __future__ import annotations


class StopChecker:
    def __init__(self, tokenizer, stops: list[str], include_stop: bool = False):
        self.decoder = tokenizer.stream()
        self.stops, self.include = stops, include_stop
        self.text = ""  # everything decoded so far (cut at the stop string once one is found)
        self.emitted = 0  # characters of `text` already handed out

    def push(self, token_id: int) -> tuple[str, str | None]:
        """Add a token; return (text safe to show now, the stop string if one just completed)."""
        self.text += self.decoder.push(token_id)
        if not self.stops:
            return self._emit(len(self.text)), None
        # Held-back text starts at `emitted`, so a stop string can only start there or later.
        found = [(i, s) for s in self.stops if (i := self.text.find(s, self.emitted)) >= 0]
        if found:
            i, s = min(found)
            end = i + len(s) if self.include else i
            self.text = self.text[:end]
            return self._emit(end), s
        return self._emit(len(self.text) - self._partial_stop_suffix()), None

    def flush(self) -> str:
        """The rest, at the end of generation (held-back text included)."""
        self.text += self.decoder.flush()
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        piece = self.text[self.emitted:end]
        self.emitted = max(self.emitted, end)
        return piece

    def _partial_stop_suffix(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        pending = self.text[self.emitted:]
        for k in range(min(len(pending), max(map(len, self.stops)) - 1), 0, -1):
            if any(s.startswith(pending[-k:]) for s in self.stops):
                return k
        return 0
