"""An OTLP/HTTP trace receiver for tests/api/traces.rs.

Each export request (POST /v1/traces, application/x-protobuf) is decoded with OpenTelemetry's
official protobuf definitions (PyPI opentelemetry-proto) and its spans are appended, one JSON
object per line, to the file named on the command line. Prints its port once it listens.

With --count (scripts/bench-traces), the spans are only counted: the file holds the total.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

COUNT = "--count" in sys.argv
OUT = [a for a in sys.argv[1:] if a != "--count"][0]
TOTAL = [0]


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        if self.headers.get("content-type") != "application/x-protobuf":
            self.send_error(415)
            return
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        if COUNT:
            TOTAL[0] += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with open(OUT, "w", encoding="utf-8") as f:
                f.write(str(TOTAL[0]))
            self.answer()
            return
        lines = []
        for rs in request.resource_spans:
            resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(
                        {
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status": span.status.code,
                            "flags": span.flags,
                            "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                            "resource": resource,
                            "scope": ss.scope.name,
                            "authorization": self.headers.get("authorization"),
                        }
                    )
        with open(OUT, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        self.answer()

    def answer(self):
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
