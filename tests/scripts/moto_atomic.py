"""moto's S3 server with conditional writes made atomic, for the test harness.

moto checks `If-None-Match: *` and then writes, on a thread per request: under load two
simultaneous conditional creates of one key can both succeed (clean-clone CI saw 2 of 4
in the fencing probe, which then rightly refused to replicate). Real S3 decides each
conditional write atomically, and that is the store our tests stand for; the fencing
probe's own tests use stores that really race (the fault proxy's check-then-write mode).

So requests carrying a condition (If-None-Match, If-Match) run one at a time. The body
is read before the lock is taken: a request stalled by the fault proxy mid-body must not
hold up other databases' conditional writes. Everything else is moto_server unchanged
(same arguments).
"""

import io
import sys
import threading

import moto.server

_conditional = threading.Lock()


def _atomic_conditions(app):
    def wrapped(environ, start_response):
        if "HTTP_IF_NONE_MATCH" not in environ and "HTTP_IF_MATCH" not in environ:
            return app(environ, start_response)
        stream = environ["wsgi.input"]
        if environ.get("wsgi.input_terminated"):
            body = stream.read()
        else:
            body = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        with _conditional:
            # moto answers with a whole body: reading it inside the lock finishes the write.
            return list(app(environ, start_response))

    return wrapped


def _run_simple(host, port, app, **kwargs):
    return _serve(host, port, _atomic_conditions(app), **kwargs)


_serve = moto.server.run_simple
moto.server.run_simple = _run_simple

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])
