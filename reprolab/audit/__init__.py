"""`reprolab audit`: re-deriving a published result from its commit, and auditing a branch's history."""
