"""Shared fixtures: each tests/support module that defines fixtures is a plugin."""

pytest_plugins = [
    "tests.support.fixtures",
    "tests.support.netns",
    "tests.support.etcd",
    "tests.support.zookeeper",
    "tests.support.pg",
    "tests.support.pgbouncer",
    "tests.support.postmortem",
]
