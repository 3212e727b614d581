#!/usr/bin/env python3
"""GCS XML-API adapter over gcp-storage-emulator, for jammi-db's live GCS lane.

object_store's GCS client speaks Google's XML API and needs ETag and Last-Modified headers;
gcp-storage-emulator (PyPI) keeps buckets and objects but serves the JSON API without them.
This adapter serves the XML subset object_store uses, storing everything in the emulator's
`Storage` (in memory):

  GET  /{bucket}?list-type=2[&prefix&delimiter&start-after&continuation-token]   list
  GET|HEAD /{bucket}/{object}          (Range supported)                         read
  PUT  /{bucket}/{object}              (x-goog-if-generation-match: 0 = create-only,
                                        N = only over generation N;
                                        x-goog-copy-source = server-side copy)   write / copy
  DELETE /{bucket}/{object}                                                      delete
  POST /{bucket}/{object}?uploads, PUT ?partNumber&uploadId,
  POST ?uploadId (complete), DELETE ?uploadId (abort)                            multipart

Every response about an object carries its generation (x-goog-generation), which
conditional writes match. Limits: no authentication (clients use skip_signature), no
object versioning (only the live generation), no If-Match on reads, list pages of 1000,
single process.

Usage: gcs_xml_adapter.py HOST PORT BUCKET...
"""
import datetime
import hashlib
import sys
import threading
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import escape

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.storage import Storage

LOCK = threading.Lock()
STORAGE = Storage(use_memory_fs=True)
UPLOADS = {}  # upload id -> (bucket, name, {part number: bytes})
PAGE = 1000


def etag(data):
    return '"%s"' % hashlib.md5(data).hexdigest()


def meta(bucket, name):
    try:
        return STORAGE.get_file_obj(bucket, name)
    except NotFound:
        return None


GENERATION = [0]


def next_generation():
    """Strictly increasing generations, even for writes within one microsecond."""
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1e6)
    GENERATION[0] = max(GENERATION[0] + 1, now)
    return str(GENERATION[0])


def store(bucket, name, data):
    now = datetime.datetime.now(datetime.timezone.utc)
    obj = {
        "kind": "storage#object",
        "bucket": bucket,
        "name": name,
        "size": str(len(data)),
        "etag": etag(data),
        "updated": now.timestamp(),
        "generation": next_generation(),
    }
    STORAGE.create_file(bucket, name, data, obj)
    return obj


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("gcs: " + fmt % args + "\n")

    def split(self):
        u = urlparse(self.path)
        parts = u.path.lstrip("/").split("/", 1)
        bucket = unquote(parts[0])
        name = unquote(parts[1]) if len(parts) > 1 else ""
        return bucket, name, parse_qs(u.query, keep_blank_values=True)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, code, data=b"", headers=None, head=False):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and not head:
            self.wfile.write(data)

    def error(self, code, what, head=False):
        xml = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>%s</Message></Error>" % (what, what)
        self.reply(code, xml.encode(), {"Content-Type": "application/xml"}, head)

    def do_GET(self, head=False):
        bucket, name, q = self.split()
        with LOCK:
            if bucket not in STORAGE.buckets:
                return self.error(404, "NoSuchBucket", head)
            if not name:
                return self.list(bucket, q)
            obj = meta(bucket, name)
            if obj is None:
                return self.error(404, "NoSuchKey", head)
            data = STORAGE.get_file(bucket, name)
        headers = {
            "ETag": obj["etag"],
            "x-goog-generation": obj["generation"],
            "Last-Modified": formatdate(obj["updated"], usegmt=True),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start, _, end = rng[6:].partition("-")
            if start == "":
                start, end = max(0, len(data) - int(end)), len(data) - 1
            else:
                start, end = int(start), (int(end) if end else len(data) - 1)
            if start >= len(data):
                return self.error(416, "InvalidRange", head)
            end = min(end, len(data) - 1)
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, len(data))
            return self.reply(206, data[start:end + 1], headers, head)
        self.reply(200, data, headers, head)

    def do_HEAD(self):
        self.do_GET(head=True)

    def list(self, bucket, q):
        prefix = q.get("prefix", [""])[0]
        delimiter = q.get("delimiter", [None])[0] or None
        after = q.get("continuation-token", q.get("start-after", [""]))[0]
        objs, prefixes = STORAGE.get_file_list(bucket, prefix or None, delimiter)
        entries = [("o", o["name"], o) for o in objs] + [("p", p, None) for p in prefixes]
        entries.sort(key=lambda e: e[1])
        entries = [e for e in entries if e[1] > after]
        page, more = entries[:PAGE], len(entries) > PAGE
        out = ["<?xml version='1.0' encoding='UTF-8'?><ListBucketResult>",
               "<Name>%s</Name><Prefix>%s</Prefix><KeyCount>%d</KeyCount><IsTruncated>%s</IsTruncated>"
               % (escape(bucket), escape(prefix), len(page), "true" if more else "false")]
        if more:
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % escape(page[-1][1]))
        for kind, key, o in page:
            if kind == "o":
                modified = datetime.datetime.fromtimestamp(o["updated"], datetime.timezone.utc)
                out.append("<Contents><Key>%s</Key><Size>%s</Size><LastModified>%s</LastModified><ETag>%s</ETag></Contents>"
                           % (escape(key), o["size"], modified.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", escape(o["etag"])))
            else:
                out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % escape(key))
        out.append("</ListBucketResult>")
        self.reply(200, "".join(out).encode(), {"Content-Type": "application/xml"})

    def do_PUT(self):
        bucket, name, q = self.split()
        data = self.body()
        with LOCK:
            if bucket not in STORAGE.buckets:
                return self.error(404, "NoSuchBucket")
            if "uploadId" in q:
                up = UPLOADS.get(q["uploadId"][0])
                if up is None:
                    return self.error(404, "NoSuchUpload")
                up[2][int(q["partNumber"][0])] = data
                return self.reply(200, b"", {"ETag": etag(data)})
            match = self.headers.get("x-goog-if-generation-match")
            current = meta(bucket, name)
            if match == "0" and current is not None:
                return self.error(412, "PreconditionFailed")
            if match not in (None, "0") and (current is None or current["generation"] != match):
                return self.error(412, "PreconditionFailed")
            src = self.headers.get("x-goog-copy-source")
            if src:
                sb, _, sn = unquote(src).lstrip("/").partition("/")
                if meta(sb, sn) is None:
                    return self.error(404, "NoSuchKey")
                data = STORAGE.get_file(sb, sn)
            obj = store(bucket, name, data)
        self.reply(200, b"", {"ETag": obj["etag"], "x-goog-generation": obj["generation"],
                              "Last-Modified": formatdate(obj["updated"], usegmt=True)})

    def do_POST(self):
        bucket, name, q = self.split()
        data = self.body()
        with LOCK:
            if bucket not in STORAGE.buckets:
                return self.error(404, "NoSuchBucket")
            if "uploads" in q:
                uid = uuid.uuid4().hex
                UPLOADS[uid] = (bucket, name, {})
                xml = ("<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult><Bucket>%s</Bucket>"
                       "<Key>%s</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>" % (escape(bucket), escape(name), uid))
                return self.reply(200, xml.encode(), {"Content-Type": "application/xml"})
            if "uploadId" in q:
                up = UPLOADS.pop(q["uploadId"][0], None)
                if up is None:
                    return self.error(404, "NoSuchUpload")
                parts = up[2]
                obj = store(bucket, name, b"".join(parts[n] for n in sorted(parts)))
                xml = ("<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult><Bucket>%s</Bucket>"
                       "<Key>%s</Key><ETag>%s</ETag></CompleteMultipartUploadResult>" % (escape(bucket), escape(name), escape(obj["etag"])))
                return self.reply(200, xml.encode(), {"Content-Type": "application/xml", "ETag": obj["etag"],
                                                      "x-goog-generation": obj["generation"]})
        self.error(400, "UnsupportedOperation")

    def do_DELETE(self):
        bucket, name, q = self.split()
        with LOCK:
            if "uploadId" in q:
                UPLOADS.pop(q["uploadId"][0], None)
                return self.reply(204)
            if meta(bucket, name) is None:
                return self.error(404, "NoSuchKey")
            STORAGE.delete_file(bucket, name)
        self.reply(204)


def main():
    host, port, buckets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    for b in buckets:
        if b not in STORAGE.buckets:
            STORAGE.create_bucket(b, {"name": b, "kind": "storage#bucket"})
    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
