"""Paper A's training runs: what defines a run (:mod:`.config`), its checkpoints (:mod:`.checkpoint`), its folder and
network (:mod:`.run`) and the training loop (:mod:`.loop`)."""
