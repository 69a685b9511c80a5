"""Native tests of the Python field partitioner: `python3 -m unittest` in this folder (with
`../../sdk/python` on PYTHONPATH); the Rust e2e test runs them too."""

import unittest

import app
import sluice_plugin as sp


class FieldPartitionerTest(unittest.TestCase):
    def test_stable_key_and_index(self):
        routes = sp.partition_values(
            app.FieldPartitioner,
            {"fields": ["user_id", "region"]},
            [
                {"user_id": "u1", "region": "eu", "x": 1},
                {"region": "eu", "user_id": "u1"},
                {"user_id": 7, "region": "us"},
                {"region": "us"},
            ],
            8,
        )
        self.assertEqual(routes[0], sp.Route("u1|eu", sp.bucket(sp.fnv1a64(b"u1|eu"), 8)))
        self.assertEqual(routes[0], routes[1])
        self.assertEqual(routes[2].key, "7|us")
        self.assertIsInstance(routes[3], sp.PluginError)
        self.assertIn("user_id", str(routes[3]))

    def test_known_hash_values(self):
        # The Rust SDK's values (sdk/src/hash.rs).
        self.assertEqual(sp.fnv1a64(b""), 0xCBF29CE484222325)
        self.assertEqual(sp.fnv1a64(b"a"), 0xAF63DC4C8601EC8C)
        self.assertEqual(sp.bucket((1 << 64) - 1, 7), 6)
        self.assertIsNone(sp.bucket(123, None))

    def test_a_bad_config_is_rejected(self):
        with self.assertRaises(sp.PluginError):
            sp.partition_values(app.FieldPartitioner, {}, [], None)


if __name__ == "__main__":
    unittest.main()
