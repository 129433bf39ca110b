"""The contract's invariants as data: each check is SQL that counts violations per partition."""
