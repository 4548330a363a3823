"""The reference: a bare grpc.aio unary echo, the physical limit of one call per job.

    python -m bench.peers.grpc_echo serve   # prints "echo listening on 127.0.0.1:PORT"

The server is a generic handler that returns the request bytes (no protobuf
parsing, no storage); the client sends the serialized EnqueueRequest our
producer would send, one call at a time, on one channel.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from importlib.metadata import version

import grpc

from bench.peers.base import Peer, stop_processes
from bench.peers.dispatcher import payload, spec, wait_for_port
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb

METHOD = "/bench.Echo/Echo"


async def serve() -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {"Echo": grpc.unary_unary_rpc_method_handler(_echo)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


class EchoPeer(Peer):
    producer_only = True

    async def setup(self) -> None:
        argv = [sys.executable, "-m", "bench.peers.grpc_echo", "serve"]
        self._server = self.spawn(argv, "server")
        port = await wait_for_port(self.ctx.workdir / "server.log", self._server)
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self._call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            METHOD
        )
        await self._call(b"", wait_for_ready=True, timeout=30)

    async def teardown(self) -> None:
        await self._channel.close()
        stop_processes([self._server], signal.SIGTERM, grace=5)

    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        request = pb.EnqueueRequest(job=spec(tag, payload(tag, i, n)))
        await self._call(request.SerializeToString(), timeout=30)

    def versions(self) -> dict[str, str]:
        return {"grpcio": version("grpcio")}


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    asyncio.run(serve())
