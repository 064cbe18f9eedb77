"""Sources and sinks: WAT readers, shard writers, and the coordinator ledger."""
