"""A webhook receiver for the benchmarks, run as its own process (so it never shares a GIL
with the dispatcher it measures): HTTP/1.1 with keep-alive on loopback, answering every
POST with 200 at once and noting when each `webhook-id` first arrived, with the message's
own `timestamp` (when it was recorded, just before its transaction committed).

`python -m bench.receiver --port-file PATH` prints nothing; it writes its port to PATH once
it listens. `GET /arrivals` answers the arrivals so far as JSON ({webhook-id: [arrival unix
time, the message's timestamp]}); `GET /count`, how many distinct ids arrived.
"""

import argparse
import asyncio
import time
from pathlib import Path

import orjson

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class Receiver(asyncio.Protocol):
    arrivals: dict[str, tuple[float, str]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            self.answer(lines[0], headers, body)

    def answer(self, request_line: str, headers: dict[str, str], body: bytes) -> None:
        method, _, rest = request_line.partition(" ")
        path = rest.partition(" ")[0]
        if method == "POST":
            message_id = headers.get("webhook-id")
            if message_id is not None and message_id not in self.arrivals:
                arrived = time.time()
                self.arrivals[message_id] = (arrived, orjson.loads(body).get("timestamp", ""))
            self.transport.write(OK)
            return
        answer = orjson.dumps(self.arrivals if path == "/arrivals" else len(self.arrivals))
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(answer)
            + answer
        )


async def serve(port_file: Path) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    temporary = port_file.with_suffix(".tmp")
    temporary.write_text(str(port))
    temporary.rename(port_file)  # whole, never half-written
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port_file))


if __name__ == "__main__":
    main()
