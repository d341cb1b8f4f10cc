"""Flow control, written once for every engine: Automatic Burst Detection, the
receive pool, the send chain and the posted-accept pool with its back-off."""
