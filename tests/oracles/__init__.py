"""Independent oracles the tests check the engine against (they share no code with bitnet.model)."""
