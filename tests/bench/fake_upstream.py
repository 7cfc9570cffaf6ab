"""The loopback fake OpenAI API as its own process, answering every request alike.

`python -m tests.bench.fake_upstream` serves services.testing.fake_openai on
127.0.0.1 (a free port), replies to every request with one short chat
completion (JSON, with OpenAI's rate-limit headers), keeps no request
bodies, and writes its port to LLMMESH_READY_FILE. Unary only: the bench
does not stream through it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from services.testing.fake_openai import RATE_LIMIT_HEADERS, FakeOpenAI, Reply, completion

ANSWER = "OK"


def main() -> None:
    # socketserver listens with a backlog of 5; at c=64 the SDK opens connections faster than
    # that and the kernel refuses some. This process serves only the fake, so widen it here.
    ThreadingHTTPServer.request_queue_size = 1024
    # The rate-limit headers make the adapter parse headroom as it does against OpenAI.
    fake = FakeOpenAI(
        default_reply=Reply.json(completion(ANSWER), headers=RATE_LIMIT_HEADERS), keep_requests=False
    ).start()
    ready_file = os.environ.get("LLMMESH_READY_FILE", "")
    if ready_file:
        temporary = Path(ready_file + ".tmp")
        temporary.write_text(json.dumps({"port": fake.port, "pid": os.getpid()}))
        temporary.replace(ready_file)
    stopped = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stopped.wait()
    fake.stop()


if __name__ == "__main__":
    main()
