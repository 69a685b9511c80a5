"""The field partitioner in Python: the same keys and partitions as the Rust
`plugins/field-partitioner` on the same records.

The partition key is the listed top-level JSON fields' values joined by `delimiter`; the index is
the key's FNV-1a hash mapped onto the sink's partition count.

Build: `componentize-py -d ../../sdk/wit -w partitioner componentize app -p . -p ../../sdk/python
-o python_field_partitioner.wasm` (the tests do it).
"""

import sluice_plugin as sp


class FieldPartitioner(sp.Partitioner):
    CONFIG_SCHEMA = {
        "type": "object",
        "additionalProperties": False,
        "required": ["fields"],
        "properties": {
            "fields": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "Top-level fields whose values make the partition key, in order.",
            },
            "delimiter": {
                "type": "string",
                "default": "|",
                "description": "Joins the field values into the key.",
            },
            "on_missing": {
                "enum": ["error", "empty"],
                "default": "error",
                "description": "A record without one of the fields: error or an empty string.",
            },
        },
    }

    def __init__(self, config):
        self.fields = config["fields"]
        self.delimiter = config.get("delimiter", "|")
        self.on_missing = config.get("on_missing", "error")

    def partition(self, record, partitions):
        doc = record.json()
        if not isinstance(doc, dict):
            raise sp.PluginError("the value is not a JSON object")
        parts = []
        for field in self.fields:
            if field in doc:
                parts.append(sp.key_text(doc[field]))
            elif self.on_missing == "empty":
                parts.append("")
            else:
                raise sp.PluginError(f"field `{field}` is missing")
        key = self.delimiter.join(parts)
        return sp.Route(key=key, index=sp.bucket(sp.fnv1a64(key.encode("utf-8")), partitions))


PartitionerPlugin = sp.export_partitioner(FieldPartitioner)
