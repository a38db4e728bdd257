"""A Jepsen-style fault suite for pgha: a checked write workload, a nemesis and checkers.

It runs on the demo's network lab (`pgha demo up --netns --vip`): every node in its own
network namespace on a bridge, plus a client namespace.  The pieces:

* ``workload`` — a client process run inside the client namespace: several threads write
  unique values into a set table, through the VIP and through a multi-host DSN, and record
  every operation (invoke and complete times, ok / fail / info) as JSON lines;
* ``monitor`` — one process inside each node's namespace that tries a write on its own
  PostgreSQL every ~50 ms and records the intervals during which that node accepted writes;
* ``nemesis`` — the faults: nftables rules that drop packets inside a node's namespace (TCP
  hangs, it is not reset), signals to agents, postmasters, whole hosts and etcd, and
  switchovers or failovers requested during a fault;
* ``check`` — pure functions over those records: lost acknowledged writes, failed writes that
  are present, instants when two nodes accepted writes, write gaps and recovery per fault;
* ``runner`` — one run: a cluster, the workload, N faults chosen from a seed, the checks
  after each, a results directory and a one-line-per-fault-kind summary;
* ``cli`` — `pgha-faults suite` (what `make fault-suite` runs) and `pgha-faults soak`.
"""
