"""An in-process fake of Google Cloud Storage's JSON API on 127.0.0.1, for tests.

It serves what gcsfs (epath's ``gs://`` backend: metadata, listing, media uploads and
downloads, resumable uploads, copies, batch deletes) and TensorStore's GCS driver (orbax's
array writes and reads, with generation preconditions) use, from objects kept in memory.
``environment(url)`` gives the variables that point both clients at it without
credentials; nothing reaches the network.

Faults: ``gcs.inject(pattern, status, kind, times)`` answers the next ``times`` requests
(None: every one) of ``kind`` ('read': object downloads, 'stat': object metadata, 'write':
uploads, copies and composes, 'delete', 'list', or 'any') whose ``bucket/name`` matches the
regular expression ``pattern`` with HTTP ``status`` instead of serving them; ``gcs.hits``
counts the injected answers per pattern.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def environment(url: str) -> dict:
    return {"STORAGE_EMULATOR_HOST": url, "FSSPEC_GS_TOKEN": "anon",
            "FSSPEC_GCS_TOKEN": "anon", "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token", "EPATH_USE_TF": "false",
            "GCE_METADATA_HOST": "127.0.0.1:9", "NO_GCE_CHECK": "true",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class FakeGCS:
    """``with FakeGCS() as gcs:`` serves ``gcs.url``; ``gcs.objects`` maps (bucket, name) to
    bytes."""

    def __init__(self):
        self.objects: dict = {}
        self.generations: dict = {}
        self.buckets: set = set()
        self.uploads: dict = {}
        self.requests: list = []  # (method, path) of every request, for debugging
        self.lock = threading.Lock()
        self.faults: list = []  # [pattern, status, kind, remaining or None]
        self.hits: dict = {}
        self._counter = itertools.count(1)
        handler = type("Handler", (_Handler,), {"gcs": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def inject(self, pattern: str, status: int, kind: str = "any", times: int | None = None):
        """Answers matching requests with ``status`` (see the module docstring)."""
        assert kind in ("read", "stat", "write", "delete", "list", "any"), kind
        with self.lock:
            self.faults.append([re.compile(pattern), status, kind, times])
            self.hits.setdefault(pattern, 0)

    def clear_faults(self):
        with self.lock:
            self.faults.clear()
            self.hits.clear()

    def fault(self, kind: str, target: str) -> int | None:
        """The status to answer a ``kind`` request for ``bucket/name`` with, if injected."""
        for fault in self.faults:
            pattern, status, wanted, remaining = fault
            if wanted in (kind, "any") and remaining != 0 and pattern.search(target):
                if remaining is not None:
                    fault[3] -= 1
                self.hits[pattern.pattern] += 1
                return status
        return None

    def names(self, bucket: str) -> list:
        return sorted(name for b, name in self.objects if b == bucket)

    # -- object operations ------------------------------------------------------------------
    def meta(self, bucket: str, name: str) -> dict:
        data = self.objects[(bucket, name)]
        generation = str(self.generations[(bucket, name)])
        return {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(data)),
                "generation": generation, "metageneration": "1",
                "contentType": "application/octet-stream", "storageClass": "STANDARD",
                "updated": "2026-01-01T00:00:00.000Z", "timeCreated": "2026-01-01T00:00:00.000Z",
                "id": f"{bucket}/{name}/{generation}"}

    def put(self, bucket: str, name: str, data: bytes) -> dict:
        self.objects[(bucket, name)] = data
        self.generations[(bucket, name)] = next(self._counter)
        self.buckets.add(bucket)
        return self.meta(bucket, name)

    def precondition_fails(self, bucket: str, name: str, query: dict) -> bool:
        generation = self.generations.get((bucket, name), 0)
        match = query.get("ifGenerationMatch")
        return match is not None and int(match) != generation


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients closing kept-alive connections; requests themselves are answered


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gcs: FakeGCS

    def log_message(self, *args):
        pass

    # -- responses ----------------------------------------------------------------------------
    def reply(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, status: int, payload: dict):
        self.reply(status, json.dumps(payload).encode())

    def not_found(self):
        self.reply_json(404, {"error": {"code": 404, "message": "No such object"}})

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def parsed(self):
        self.gcs.requests.append((self.command, self.path, dict(self.headers)))
        url = urllib.parse.urlsplit(self.path)
        return url.path, dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))

    # -- methods ------------------------------------------------------------------------------
    def do_GET(self):
        path, query = self.parsed()
        with self.gcs.lock:
            if not self.injected(path, query):
                self.get(path, query)

    do_HEAD = do_GET

    def do_POST(self):
        path, query = self.parsed()
        data = self.body()
        with self.gcs.lock:
            if not self.injected(path, query):
                self.post(path, query, data)

    def do_PUT(self):
        path, query = self.parsed()
        data = self.body()
        with self.gcs.lock:
            if not self.injected(path, query):
                self.put_upload(query, data)

    def do_DELETE(self):
        path, query = self.parsed()
        with self.gcs.lock:
            if self.injected(path, query):
                return
            status = self.delete(path, query)
            self.reply(status) if status == 204 else self.not_found()

    # -- faults -------------------------------------------------------------------------------
    def request_target(self, path, query) -> tuple:
        """(kind, 'bucket/name') of a request, for fault matching."""
        obj = re.fullmatch(r"(?:/download)?/storage/v1/b/([^/]+)/o/([^/]+)(/.*)?", path)
        upload = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o/?", path)
        listing = re.fullmatch(r"/storage/v1/b/([^/]+)/o/?", path)
        if self.command == "DELETE" and obj:
            return "delete", f"{obj.group(1)}/{urllib.parse.unquote(obj.group(2))}"
        if upload or self.command == "PUT" or (obj and obj.group(3)):
            if "upload_id" in query and query["upload_id"] in self.gcs.uploads:
                bucket, name = self.gcs.uploads[query["upload_id"]][:2]
            elif obj:
                bucket, name = obj.group(1), urllib.parse.unquote(obj.group(2))
            else:
                bucket, name = (upload.group(1) if upload else ""), query.get("name", "")
            return "write", f"{bucket}/{name}"
        if obj:
            kind = "read" if query.get("alt") == "media" else "stat"
            return kind, f"{obj.group(1)}/{urllib.parse.unquote(obj.group(2))}"
        if listing:
            return "list", f"{listing.group(1)}/{query.get('prefix', '')}"
        return "any", path

    def injected(self, path, query) -> bool:
        """Answers with an injected fault's status when one matches; True if it did."""
        status = self.gcs.fault(*self.request_target(path, query))
        if status is None:
            return False
        self.reply_json(status, {"error": {"code": status, "message": f"injected {status}"}})
        return True

    # -- GET ----------------------------------------------------------------------------------
    def get(self, path, query):
        match = re.fullmatch(r"(?:/download)?/storage/v1/b/([^/]+)/o/(.+)", path)
        if match:
            bucket, name = match.group(1), urllib.parse.unquote(match.group(2))
            return self.get_object(bucket, name, query)
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/?", path)
        if match:
            return self.list_objects(match.group(1), query)
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/?", path)
        if match:
            return self.reply_json(200, {"kind": "storage#bucket", "name": match.group(1),
                                         "id": match.group(1)})
        self.not_found()

    def get_object(self, bucket, name, query):
        key = (bucket, name)
        if key not in self.gcs.objects:
            return self.not_found()
        generation = self.gcs.generations[key]
        if self.gcs.precondition_fails(bucket, name, query):
            return self.reply_json(412, {"error": {"code": 412}})
        if query.get("ifGenerationNotMatch") and int(query["ifGenerationNotMatch"]) == generation:
            return self.reply(304)
        headers = {"x-goog-generation": str(generation), "x-goog-metageneration": "1",
                   "x-goog-stored-content-length": str(len(self.gcs.objects[key]))}
        if query.get("alt") != "media":
            return self.reply(200, json.dumps(self.gcs.meta(bucket, name)).encode(),
                              headers=headers)
        data = self.gcs.objects[key]
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if ranged and data:
            start = int(ranged.group(1) or 0)
            end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1,
                      len(data) - 1)
            if start >= len(data):
                return self.reply(416, headers=headers)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self.reply(206, data[start:end + 1], "application/octet-stream", headers)
        self.reply(200, data, "application/octet-stream", headers)

    def list_objects(self, bucket, query):
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        start, end = query.get("startOffset", ""), query.get("endOffset", "")
        items, prefixes = [], set()
        for name in self.gcs.names(bucket):
            if not name.startswith(prefix) or name < start or (end and name >= end):
                continue
            rest = name[len(prefix):]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter)[0] + delimiter)
            else:
                items.append(self.gcs.meta(bucket, name))
        self.reply_json(200, {"kind": "storage#objects", "items": items,
                              "prefixes": sorted(prefixes)})

    # -- POST ---------------------------------------------------------------------------------
    def post(self, path, query, data):
        if re.fullmatch(r"/storage/v1/b/?", path):  # create a bucket
            name = json.loads(data or b"{}").get("name", "")
            self.gcs.buckets.add(name)
            return self.reply_json(200, {"kind": "storage#bucket", "name": name})
        match = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o/?", path)
        if match:
            return self.upload(match.group(1), query, data)
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)/(rewriteTo|copyTo)/b/([^/]+)/o/(.+)",
                             path)
        if match:
            return self.copy(match, query)
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)/moveTo/o/(.+)", path)
        if match:  # objects.move (gcsfs's mv): within one bucket
            bucket = match.group(1)
            source = (bucket, urllib.parse.unquote(match.group(2)))
            if source not in self.gcs.objects:
                return self.not_found()
            meta = self.gcs.put(bucket, urllib.parse.unquote(match.group(3)),
                                self.gcs.objects.pop(source))
            del self.gcs.generations[source]
            return self.reply_json(200, meta)
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)/compose", path)
        if match:
            request = json.loads(data)
            bucket = match.group(1)
            joined = b"".join(self.gcs.objects[(bucket, s["name"])]
                              for s in request["sourceObjects"])
            return self.reply_json(200, self.gcs.put(
                bucket, urllib.parse.unquote(match.group(2)), joined))
        if path.startswith("/batch/"):
            return self.batch(data)
        self.not_found()

    def upload(self, bucket, query, data):
        kind = query.get("uploadType", "media")
        if "upload_id" in query:  # a chunk of a resumable upload (gcsfs POSTs them)
            return self.put_upload(query, data)
        if kind == "resumable":
            name = query.get("name") or json.loads(data or b"{}").get("name")
            upload_id = str(next(self.gcs._counter))
            self.gcs.uploads[upload_id] = (bucket, name, bytearray(), dict(query))
            location = (f"{self.gcs.url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable"
                        f"&upload_id={upload_id}")
            return self.reply(200, b"", headers={"Location": location})
        if kind == "multipart":
            boundary = re.search(r'boundary="?([^";]+)"?', self.headers["Content-Type"]).group(1)
            parts = [p for p in data.split(b"--" + boundary.encode())
                     if p.strip() not in (b"", b"--")]
            meta = json.loads(re.split(rb"\r?\n\r?\n", parts[0], maxsplit=1)[1])
            content = re.split(rb"\r?\n\r?\n", parts[1], maxsplit=1)[1]
            name, data = meta["name"], re.sub(rb"\r?\n$", b"", content)
        else:
            name = query["name"]
        if self.gcs.precondition_fails(bucket, name, query):
            return self.reply_json(412, {"error": {"code": 412}})
        self.reply_json(200, self.gcs.put(bucket, name, data))

    def put_upload(self, query, data):
        bucket, name, buffer, first = self.gcs.uploads[query["upload_id"]]
        buffer += data
        total = re.search(r"/(\d+|\*)$", self.headers.get("Content-Range", "bytes */0"))
        if total and total.group(1) != "*" and len(buffer) >= int(total.group(1)):
            del self.gcs.uploads[query["upload_id"]]
            return self.reply_json(200, self.gcs.put(bucket, name, bytes(buffer)))
        if total is None or total.group(1) == "*" and not data:
            pass
        self.reply(308, headers={"Range": f"bytes=0-{len(buffer) - 1}"} if buffer else {})

    def copy(self, match, query):
        source = (match.group(1), urllib.parse.unquote(match.group(2)))
        if source not in self.gcs.objects:
            return self.not_found()
        meta = self.gcs.put(match.group(4), urllib.parse.unquote(match.group(5)),
                            self.gcs.objects[source])
        if match.group(3) == "copyTo":
            return self.reply_json(200, meta)
        self.reply_json(200, {"kind": "storage#rewriteResponse", "done": True,
                              "resource": meta, "objectSize": meta["size"],
                              "totalBytesRewritten": meta["size"]})

    def batch(self, data):
        boundary = re.search(r'boundary="?([^";]+)"?', self.headers["Content-Type"]).group(1)
        replies = []
        for part in data.split(b"--" + boundary.encode()):
            request = re.search(rb"(DELETE|GET|POST) (\S+) HTTP", part)
            if not request:
                continue
            target = urllib.parse.urlsplit(request.group(2).decode())
            status = self.delete(target.path, dict(urllib.parse.parse_qsl(target.query)))
            content_id = re.search(rb"Content-ID: <?([^>\r\n]+)>?", part)
            replies.append((status, content_id.group(1).decode() if content_id else ""))
        out = "".join(f"--batch_reply\r\nContent-Type: application/http\r\nContent-ID: "
                      f"<response-{cid}>\r\n\r\nHTTP/1.1 {status} "
                      f"{'No Content' if status == 204 else 'Not Found'}\r\n"
                      f"Content-Length: 0\r\n\r\n\r\n" for status, cid in replies)
        self.reply(200, (out + "--batch_reply--\r\n").encode(),
                   "multipart/mixed; boundary=batch_reply")

    def delete(self, path, query) -> int:
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)", path)
        if not match:
            return 404
        key = (match.group(1), urllib.parse.unquote(match.group(2)))
        if key not in self.gcs.objects:
            return 404
        if self.gcs.precondition_fails(*key, query):
            return 412
        del self.gcs.objects[key]
        del self.gcs.generations[key]
        return 204
