"""A tiny HTTP/1.1 webhook receiver on 127.0.0.1 that records requests and answers from a script."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lowercased names
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hang: bool = False  # never answer


class Receiver:
    """Answers each request with the next scripted answer; 200 once the script is used up."""

    def __init__(self, *answers: Answer | int) -> None:
        self.script = [a if isinstance(a, Answer) else Answer(a) for a in answers]
        self.received: list[Received] = []
        self._server: asyncio.Server | None = None
        self._hung: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for w in self._hung:
            w.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await self._read(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.received.append(request)
        answer = self.script.pop(0) if self.script else Answer()
        if answer.hang:
            self._hung.append(writer)
            return
        head = [f"HTTP/1.1 {answer.status} Status", f"content-length: {len(answer.body)}"]
        head += [f"{k}: {v}" for k, v in answer.headers.items()]
        head.append("connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + answer.body)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the sender stopped reading (the answer cap)
        finally:
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Received:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Received(method, path, headers, body)
