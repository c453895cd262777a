"""`lmlab chat`: a multi-turn REPL over LM.generate.

Line editing and history come from prompt_toolkit when stdin is a terminal; piped input is read
line by line, so the REPL can be scripted and tested. Ctrl-C stops the answer being written,
not the program; Ctrl-D or /exit leaves.
"""

from __future__ import annotations

import sys

from lmlab.errors import LmlabError

HELP = """commands:
  /reset             forget the conversation
  /system TEXT       set the system message (and reset)
  /set NAME VALUE    temperature, top_p, top_k, max_new_tokens, seed (e.g. /set temperature 0.7)
  /show              print the current settings
  /exit              leave (Ctrl-D too)"""

SETTINGS = {"temperature": float, "top_p": float, "top_k": int, "max_new_tokens": int, "seed": int}


class ChatSession:
    """Conversation state and slash commands, independent of any terminal."""

    def __init__(self, settings: dict, system: str | None = None):
        self.settings, self.system = dict(settings), system
        self.history: list[dict] = []

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def command(self, line: str) -> str | None:
        """Run a slash command; return text to show, or None to leave."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        if name in ("exit", "quit"):
            return None
        if name == "reset":
            self.history.clear()
            return "(conversation cleared)"
        if name == "system":
            self.system, self.history = rest or None, []
            return f"(system message {'set' if rest else 'removed'}; conversation cleared)"
        if name == "set":
            key, _, value = rest.partition(" ")
            if key not in SETTINGS:
                return f"unknown setting {key!r}; one of: {', '.join(SETTINGS)}"
            try:
                self.settings[key] = SETTINGS[key](value) if value.lower() != "none" else None
            except ValueError:
                return f"{key} needs a {SETTINGS[key].__name__}, got {value!r}"
            return f"({key} = {self.settings[key]})"
        if name == "show":
            return "  ".join(f"{k}={v}" for k, v in self.settings.items()) + f"  system={self.system!r}"
        return HELP


def _reader():
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory

        session = PromptSession(history=InMemoryHistory())
        return lambda: session.prompt("you> ")
    return lambda: input()


def run_repl(lm, settings: dict, system: str | None = None) -> int:
    chat = ChatSession(settings, system)
    read = _reader()
    print("lmlab chat: /help for commands, Ctrl-C stops an answer, Ctrl-D leaves.", file=sys.stderr)
    while True:
        try:
            line = read().strip()
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if not line:
            continue
        if line.startswith("/"):
            reply = chat.command(line)
            if reply is None:
                return 0
            print(reply)
            continue
        chat.history.append({"role": "user", "content": line})
        pieces: list[str] = []

        def show(piece: str) -> None:
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()

        try:
            lm.generate(chat.messages(), stream=show, **chat.settings)
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        except LmlabError as e:
            chat.history.pop()
            print(f"error: {e}", file=sys.stderr)
            continue
        print()
        chat.history.append({"role": "assistant", "content": "".join(pieces)})
