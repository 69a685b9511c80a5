"""Write Sluice plugins in Python: the guest library for componentize-py.

It hides the batch encoding of ``sdk/wit/plugin.wit`` the way the Rust ``sluice-sdk`` does: a
plugin is a class with ``__init__(self, config)`` and one method per record, exported with one
call::

    import sluice_plugin as sp

    class ByUser(sp.Partitioner):
        CONFIG_SCHEMA = {"type": "object", "properties": {"field": {"type": "string"}}}

        def __init__(self, config):
            self.field = config.get("field", "user")

        def partition(self, record, partitions):
            key = sp.key_text(record.json()[self.field])
            return sp.Route(key=key, index=sp.bucket(sp.fnv1a64(key.encode()), partitions))

    PartitionerPlugin = sp.export_partitioner(ByUser)

Build it with ``componentize-py -d <sdk>/wit -w partitioner componentize app -o app.wasm``
(``sluice plugin new NAME --kind partitioner --lang python`` writes a ``build.sh`` that does).

The library has no dependency beyond the standard library, so it also runs under plain Python:
test a plugin natively with :func:`partition_values` and :func:`transform_values`.
"""

import json
import struct

__all__ = [
    "Record",
    "Route",
    "Output",
    "KEEP",
    "PluginError",
    "Partitioner",
    "Transform",
    "export_partitioner",
    "export_transform",
    "fnv1a64",
    "bucket",
    "key_text",
    "decode_batch",
    "encode_routes",
    "encode_outcomes",
    "partition_values",
    "transform_values",
]

_HAS_KEY = 1
_HAS_TIMESTAMP = 2
_HAS_HEADERS = 4
_OUTCOME_KEEP = 0
_OUTCOME_RECORDS = 1
_OUTCOME_ERROR = 2
_ROUTE_OK = 0
_ROUTE_ERROR = 1
_ROUTE_KEY = 1
_ROUTE_INDEX = 2
_ROUTE_HASH_KEY = 4

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_MASK64 = (1 << 64) - 1


class PluginError(Exception):
    """Raise it (or any exception) from a record method: that record goes to the error policy."""


class Record:
    """One input record. ``value`` and ``key`` are bytes, ``headers`` a list of
    ``(name, bytes)``, ``meta`` a dict of read-only source metadata (``shard-id``, ``topic``...)."""

    __slots__ = ("value", "key", "timestamp", "headers", "meta")

    def __init__(self, value, key=None, timestamp=None, headers=(), meta=None):
        self.value = value
        self.key = key
        self.timestamp = timestamp
        self.headers = list(headers)
        self.meta = dict(meta or {})

    def json(self):
        """The value parsed as JSON."""
        return json.loads(self.value)


class Route:
    """Where a partitioner sends a record: a partition key and/or a partition index."""

    __slots__ = ("key", "index", "explicit_hash_key")

    def __init__(self, key=None, index=None, explicit_hash_key=None):
        self.key = key
        self.index = index
        self.explicit_hash_key = explicit_hash_key

    def __eq__(self, other):
        return isinstance(other, Route) and (
            self.key,
            self.index,
            self.explicit_hash_key,
        ) == (other.key, other.index, other.explicit_hash_key)

    def __repr__(self):
        return f"Route(key={self.key!r}, index={self.index!r})"


class Output:
    """A transform's output record: a value (bytes, or any JSON-serialisable object), and
    optionally a new key, timestamp or headers (left as ``...`` they are the input's)."""

    __slots__ = ("value", "key", "timestamp", "headers")

    def __init__(self, value, key=..., timestamp=..., headers=...):
        self.value = value
        self.key = key
        self.timestamp = timestamp
        self.headers = headers


KEEP = object()
"""Returned by a transform: the input record passes on unchanged."""


def fnv1a64(data):
    """64-bit FNV-1a, the stable hash of the Rust SDK (``sluice_sdk::hash::fnv1a64``)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _MASK64
    return h


def bucket(h, count):
    """Maps a hash onto ``0..count``, as ``sluice_sdk::hash::bucket`` does; ``None`` without a
    partition count."""
    if not count:
        return None
    return (h * count) >> 64


def key_text(value):
    """A JSON value as partition-key text: a string as it is, anything else as compact JSON
    (``7``, ``true``, ``null``), as ``sluice_sdk::json::key_text`` gives for those values."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf):
        self.buf = memoryview(buf)
        self.pos = 0

    def take(self, n):
        end = self.pos + n
        if end > len(self.buf):
            raise ValueError(f"truncated batch from host at byte {self.pos}")
        part = self.buf[self.pos : end]
        self.pos = end
        return part

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return _U32.unpack(self.take(4))[0]

    def i64(self):
        return _I64.unpack(self.take(8))[0]

    def bytes(self):
        return bytes(self.take(self.u32()))

    def str(self):
        return self.bytes().decode("utf-8")


def decode_batch(buf):
    """The host's input batch as a list of :class:`Record`."""
    r = _Reader(buf)
    records = []
    for _ in range(r.u32()):
        flags = r.u8()
        key = r.bytes() if flags & _HAS_KEY else None
        timestamp = r.i64() if flags & _HAS_TIMESTAMP else None
        headers = [(r.str(), r.bytes()) for _ in range(r.u32())]
        meta = {}
        for _ in range(r.u32()):
            name = r.str()
            meta[name] = r.str()
        records.append(Record(r.bytes(), key, timestamp, headers, meta))
    return records


def _put_bytes(out, data):
    out += _U32.pack(len(data))
    out += data


def _error_text(e):
    return (str(e) or type(e).__name__).encode("utf-8")


def encode_routes(routes):
    """Route output: one :class:`Route` or exception per input record."""
    out = bytearray(_U32.pack(len(routes)))
    for route in routes:
        if isinstance(route, BaseException):
            out.append(_ROUTE_ERROR)
            _put_bytes(out, _error_text(route))
            continue
        flags = 0
        if route.key is not None:
            flags |= _ROUTE_KEY
        if route.index is not None:
            flags |= _ROUTE_INDEX
        if route.explicit_hash_key is not None:
            flags |= _ROUTE_HASH_KEY
        out.append(_ROUTE_OK)
        out.append(flags)
        if route.key is not None:
            _put_bytes(out, route.key.encode("utf-8"))
        if route.index is not None:
            out += _U32.pack(route.index)
        if route.explicit_hash_key is not None:
            _put_bytes(out, route.explicit_hash_key.encode("utf-8"))
    return bytes(out)


def _value_bytes(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _put_output(out, o):
    if not isinstance(o, Output):
        o = Output(o)
    flags = 0
    if o.key is not ...:
        flags |= _HAS_KEY
    if o.timestamp is not ...:
        flags |= _HAS_TIMESTAMP
    if o.headers is not ...:
        flags |= _HAS_HEADERS
    out.append(flags)
    if o.key is not ...:
        if o.key is None:
            out.append(0)
        else:
            out.append(1)
            key = o.key.encode("utf-8") if isinstance(o.key, str) else bytes(o.key)
            _put_bytes(out, key)
    if o.timestamp is not ...:
        if o.timestamp is None:
            out.append(0)
        else:
            out.append(1)
            out += _I64.pack(int(o.timestamp))
    if o.headers is not ...:
        out += _U32.pack(len(o.headers))
        for name, value in o.headers:
            _put_bytes(out, name.encode("utf-8"))
            _put_bytes(out, value.encode("utf-8") if isinstance(value, str) else bytes(value))
    _put_bytes(out, _value_bytes(o.value))


def encode_outcomes(outcomes):
    """Record output: per input record :data:`KEEP`, an exception (error), or a list of outputs
    (values or :class:`Output`; an empty list drops the record)."""
    out = bytearray(_U32.pack(len(outcomes)))
    for outcome in outcomes:
        if outcome is KEEP:
            out.append(_OUTCOME_KEEP)
        elif isinstance(outcome, BaseException):
            out.append(_OUTCOME_ERROR)
            _put_bytes(out, _error_text(outcome))
        else:
            out.append(_OUTCOME_RECORDS)
            out += _U32.pack(len(outcome))
            for o in outcome:
                _put_output(out, o)
    return bytes(out)


class Partitioner:
    """Base of a partitioner: set ``CONFIG_SCHEMA`` (a JSON Schema, as a dict), take the config
    in ``__init__`` (raise to reject it) and return a :class:`Route` from ``partition``."""

    CONFIG_SCHEMA = {"type": "object"}

    def __init__(self, config):
        self.config = config

    def partition(self, record, partitions):
        raise NotImplementedError


class Transform:
    """Base of a transform: ``process`` returns :data:`KEEP`, ``None`` or ``[]`` (drop), one
    value or :class:`Output`, or a list of them; raising sends the record to the error policy."""

    CONFIG_SCHEMA = {"type": "object"}

    def __init__(self, config):
        self.config = config

    def process(self, record):
        raise NotImplementedError


def _reject(message):
    """The WIT `result` error of `init`: componentize-py's `Err` inside a component."""
    try:
        from componentize_py_types import Err  # only inside a component
    except ImportError:  # native tests
        return PluginError(message)
    return Err(message)


def _as_outputs(result):
    if result is KEEP:
        return KEEP
    if result is None:
        return []
    if isinstance(result, list):
        return result
    return [result]


class _Export:
    """What every export shares: the config schema, and ``init``, which builds the plugin into
    module state (componentize-py may make a new export object per call)."""

    _cls = None
    _state = None

    def config_schema(self):
        return json.dumps(self._cls.CONFIG_SCHEMA)

    def init(self, config):
        try:
            self._state["plugin"] = self._cls(json.loads(config))
        except Exception as e:  # noqa: BLE001 - any failure rejects the config
            raise _reject(str(e) or type(e).__name__) from None

    def _each(self, batch, call):
        """``call(plugin, record)`` per record of ``batch``; an exception is that record's
        error, not a trap."""
        plugin = self._state["plugin"]
        results = []
        for record in decode_batch(batch):
            try:
                results.append(call(plugin, record))
            except Exception as e:  # noqa: BLE001
                results.append(e)
        return results


def export_partitioner(cls):
    """The class componentize-py exports for the ``partitioner`` world: assign it to
    ``PartitionerPlugin`` in the app module."""

    class PartitionerPlugin(_Export):
        _cls = cls
        _state = {}

        def partition(self, batch, partition_count):
            return encode_routes(self._each(batch, lambda p, r: p.partition(r, partition_count)))

    return PartitionerPlugin


def export_transform(cls):
    """The class componentize-py exports for the ``transform`` world: assign it to
    ``TransformPlugin`` in the app module."""

    class TransformPlugin(_Export):
        _cls = cls
        _state = {}

        def process(self, batch):
            return encode_outcomes(self._each(batch, lambda p, r: _as_outputs(p.process(r))))

    return TransformPlugin


def _encode_batch(records):
    out = bytearray(_U32.pack(len(records)))
    for r in records:
        if not isinstance(r, Record):
            r = Record(r if isinstance(r, bytes) else _value_bytes(r))
        flags = (_HAS_KEY if r.key is not None else 0) | (
            _HAS_TIMESTAMP if r.timestamp is not None else 0
        )
        out.append(flags)
        if r.key is not None:
            _put_bytes(out, r.key)
        if r.timestamp is not None:
            out += _I64.pack(r.timestamp)
        out += _U32.pack(len(r.headers))
        for name, value in r.headers:
            _put_bytes(out, name.encode("utf-8"))
            _put_bytes(out, value)
        out += _U32.pack(len(r.meta))
        for name, value in r.meta.items():
            _put_bytes(out, name.encode("utf-8"))
            _put_bytes(out, value.encode("utf-8"))
        _put_bytes(out, r.value)
    return bytes(out)


def _read_routes(buf):
    r = _Reader(buf)
    routes = []
    for _ in range(r.u32()):
        if r.u8() == _ROUTE_ERROR:
            routes.append(PluginError(r.str()))
            continue
        flags = r.u8()
        key = r.str() if flags & _ROUTE_KEY else None
        index = r.u32() if flags & _ROUTE_INDEX else None
        hash_key = r.str() if flags & _ROUTE_HASH_KEY else None
        routes.append(Route(key, index, hash_key))
    return routes


def partition_values(cls, config, values, partitions=None):
    """Runs a partitioner natively through the batch encoding, as the host would: returns one
    :class:`Route` or :class:`PluginError` per value (bytes, or JSON-serialisable objects)."""
    plugin = export_partitioner(cls)()
    plugin.init(json.dumps(config))
    return _read_routes(plugin.partition(_encode_batch(values), partitions))


def transform_values(cls, config, values):
    """Runs a transform natively through the batch encoding; returns per value the list of
    output values (bytes), ``KEEP``, or a :class:`PluginError`."""
    plugin = export_transform(cls)()
    plugin.init(json.dumps(config))
    r = _Reader(plugin.process(_encode_batch(values)))
    results = []
    for _ in range(r.u32()):
        tag = r.u8()
        if tag == _OUTCOME_KEEP:
            results.append(KEEP)
        elif tag == _OUTCOME_ERROR:
            results.append(PluginError(r.str()))
        else:
            outs = []
            for _ in range(r.u32()):
                flags = r.u8()
                if flags & _HAS_KEY and r.u8():
                    r.bytes()
                if flags & _HAS_TIMESTAMP and r.u8():
                    r.i64()
                if flags & _HAS_HEADERS:
                    for _ in range(r.u32()):
                        r.str()
                        r.bytes()
                outs.append(r.bytes())
            results.append(outs)
    return results
