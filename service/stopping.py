"""The chats generating now, so that a service told to stop can end them in a way their clients can tell.

When the service is told to stop (SIGTERM), chats still waiting for a generation slot never begin
(the scheduler is closed: 503 at once, `service.app.stop_taking_work`). Those already generating are
let finish; `cut` stops the ones still generating shortly before the server's graceful timeout, which
would otherwise cancel their requests: a plain chat bare (uvicorn's 500), a stream mid-body (the
client sees a truncated body, not why). Each chat registers its cancel event while it generates;
`cut` marks it cut, then sets the event, so the chat stops at its next token and answers 503 (a plain
chat) or ends its stream with an error event and `[DONE]`.

    with rt.chats.generating(cancel) as chat:
        ...  # generate, checking `cancel` per token
    if chat.cut: ...  # stopped because the service stops, not because the client left
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

STOPPING_RETRY_AFTER = 5  # seconds: `Retry-After` of work refused or stopped as the service stops (another replica, or this one restarted)
STOPPING = "the service is stopping"


@dataclass(eq=False)
class Chat:
    """One chat's registration: generating while the `with` block runs."""

    cancel: threading.Event
    chats: GeneratingChats
    cut: bool = False  # stopped by `GeneratingChats.cut`

    def __enter__(self) -> Chat:
        self.chats._add(self)
        return self

    def __exit__(self, *exc) -> None:
        self.chats._remove(self)


@dataclass
class GeneratingChats:
    cut_off: int = 0  # chats stopped by `cut` so far
    _chats: set[Chat] = field(default_factory=set)
    _cutting: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generating(self, cancel: threading.Event) -> Chat:
        """A chat whose generation `cancel` stops, registered while in its `with` block; one that
        begins after `cut` is cut at once."""
        return Chat(cancel, self)

    def cut(self) -> int:
        """Stop every chat generating now (and any that begins later): returns how many."""
        with self._lock:
            self._cutting = True
            chats = list(self._chats)
        return self._cut(chats)

    def _add(self, chat: Chat) -> None:
        with self._lock:
            self._chats.add(chat)
            late = self._cutting
        if late:
            self._cut([chat])

    def _remove(self, chat: Chat) -> None:
        with self._lock:
            self._chats.discard(chat)

    def _cut(self, chats: list[Chat]) -> int:
        for chat in chats:
            chat.cut = True
            chat.cancel.set()
        with self._lock:
            self.cut_off += len(chats)
        return len(chats)
