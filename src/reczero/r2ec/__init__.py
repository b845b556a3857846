"""R2ec: one LLM that reasons about a user's history, then ranks every item with its own hidden state.

The pieces, each a small module (R2EC.md describes the reference and its defects):

* :mod:`reczero.r2ec.prompts` — the user prompt (history window) and the item prompt;
* :mod:`reczero.r2ec.model` — ``<answer>`` as one token, hidden states read at it, cosine / τ scores;
* :mod:`reczero.r2ec.item_table` — every catalog item's vector, in batches, saved with the run;
* :mod:`reczero.r2ec.rewards` — RecPO's fused reward, group advantages, the rollouts marked for the item loss;
* :mod:`reczero.r2ec.losses` — the token loss (each rollout weighted by its own advantage) and the item loss.

Training is :mod:`reczero.train.r2ec` (RecPO on TRL's ``GRPOTrainer``); evaluation is ``reczero eval``
of an R2ec run (:mod:`reczero.r2ec.evaluate`). Nothing heavy is imported here.
"""
