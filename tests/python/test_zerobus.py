"""The public Zerobus Python SDK (databricks-zerobus-ingest-sdk from PyPI),
unchanged, against weir with authentication on: OAuth tokens from weir's
token endpoint, protobuf, JSON and Arrow streams, acks and flush, and the
auth failures the SDK reports."""

import base64
import hashlib
import json
import urllib.parse
import urllib.request

import pyarrow as pa
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from zerobus import (
    ArrowStreamConfigurationOptions,
    HeadersProvider,
    NonRetriableException,
    RecordType,
    StreamConfigurationOptions,
    TableProperties,
    ZerobusSdk,
)

from conftest import Weir

TABLE = "main.telemetry.sensors"
OPTIONS = dict(recovery=False, recovery_timeout_ms=10000, flush_timeout_ms=30000)
CLIENTS = {"admin": "admin-secret", "producer": "s3cret"}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("grpc_proxy", "GRPC_PROXY", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
                "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("no_grpc_proxy", "NO_GRPC_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def sha256(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture
def secured(tmp_path):
    config = f"""
[[auth.clients]]
id = "admin"
secret_sha256 = "{sha256(CLIENTS["admin"])}"
write = ["*"]
read = ["*"]
ddl = true

[[auth.clients]]
id = "producer"
secret_sha256 = "{sha256(CLIENTS["producer"])}"
write = ["{TABLE}"]
"""
    server = Weir(tmp_path / "data", config)
    assert server.token_addr, "the token endpoint did not start"
    server.admin = token(server, "admin")
    server.sql("CREATE TABLE sensors (id BIGINT NOT NULL, ts TIMESTAMP, temp DOUBLE, site VARCHAR)",
               token=server.admin)
    server.sql("CREATE TABLE other (id BIGINT NOT NULL)", token=server.admin)
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0


def token(server, client):
    """A token as any OAuth client gets one from weir's endpoint."""
    basic = base64.b64encode(f"{client}:{CLIENTS[client]}".encode()).decode()
    request = urllib.request.Request(
        f"http://{server.token_addr}/oidc/v1/token",
        data=urllib.parse.urlencode({"grant_type": "client_credentials"}).encode(),
        headers={"Authorization": f"Basic {basic}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request) as response:
        return json.loads(response.read())["access_token"]


def count(server, table="sensors"):
    return int(server.sql(f"SELECT count(*) AS n FROM {table}", token=server.admin).splitlines()[1])


def sdk(server):
    return ZerobusSdk(f"http://{server.addr}", f"http://{server.token_addr}")


def reading_class():
    """A protobuf message type made at run time, as a producer's generated
    class would be."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="reading.proto", package="weirtest", syntax="proto2")
    message = file.message_type.add(name="Reading")
    message.field.add(name="id", number=1, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    message.field.add(name="temp", number=3, type=field.TYPE_DOUBLE, label=field.LABEL_OPTIONAL)
    message.field.add(name="site", number=4, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("weirtest.Reading"))


def test_protobuf_json_and_arrow_streams_with_oauth(secured):
    client = sdk(secured)
    reading = reading_class()

    stream = client.create_stream("producer", CLIENTS["producer"], TableProperties(TABLE, reading.DESCRIPTOR),
                                  StreamConfigurationOptions(record_type=RecordType.PROTO, **OPTIONS))
    offset = stream.ingest_record_offset(reading(id=0, temp=1.5, site="proto"))
    stream.wait_for_offset(offset)
    assert count(secured) == 1  # acked means queryable
    stream.ingest_records_offset([reading(id=i, temp=i / 2, site="proto").SerializeToString() for i in range(1, 100)])
    stream.flush()
    stream.close()

    stream = client.create_stream("producer", CLIENTS["producer"], TableProperties(TABLE),
                                  StreamConfigurationOptions(record_type=RecordType.JSON, **OPTIONS))
    for i in range(100, 150):
        stream.ingest_record_offset(json.dumps({"id": i, "site": "json", "ts": "2026-12-04T01:00:00Z"}))
    stream.ingest_records_offset([json.dumps({"id": i, "site": "json"}) for i in range(150, 200)])
    stream.flush()
    stream.close()

    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("site", pa.large_utf8())])
    arrow = client.create_arrow_stream(TABLE, schema, "producer", CLIENTS["producer"],
                                       ArrowStreamConfigurationOptions(recovery=False, connection_timeout_ms=10000))
    offset = arrow.ingest_batch(pa.record_batch({"id": list(range(200, 300)), "site": ["arrow"] * 100}, schema=schema))
    arrow.wait_for_offset(offset)
    arrow.flush()
    arrow.close()

    rows = secured.sql("SELECT site, count(*) AS n, count(DISTINCT id) AS ids FROM sensors GROUP BY site ORDER BY site",
                       token=secured.admin)
    assert rows.splitlines() == ["site,n,ids", "arrow,100,100", "json,100,100", "proto,100,100"]


class NoToken(HeadersProvider):
    def get_headers(self):
        return [("x-databricks-zerobus-table-name", TABLE)]


def test_auth_failures_are_reported_and_not_retried(secured):
    client = sdk(secured)
    options = StreamConfigurationOptions(record_type=RecordType.JSON, **OPTIONS)
    with pytest.raises(NonRetriableException, match="401"):
        client.create_stream("producer", "wrong", TableProperties(TABLE), options)
    with pytest.raises(NonRetriableException, match="401"):
        client.create_stream("nobody", "s3cret", TableProperties(TABLE), options)
    with pytest.raises(NonRetriableException, match="(?i)unauthenticated"):
        client.create_stream(table_properties=TableProperties(TABLE), options=options, headers_provider=NoToken())
    # The producer may write sensors only.
    with pytest.raises(NonRetriableException, match="(?i)permission"):
        client.create_stream("producer", CLIENTS["producer"], TableProperties("main.telemetry.other"), options)
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    with pytest.raises(Exception, match="(?i)permission"):
        arrow = client.create_arrow_stream("main.telemetry.other", schema, "producer", CLIENTS["producer"],
                                           ArrowStreamConfigurationOptions(recovery=False, connection_timeout_ms=10000))
        arrow.ingest_batch(pa.record_batch({"id": [1]}, schema=schema))
        arrow.flush()
    assert count(secured, "other") == 0
    assert count(secured) == 0
