import pytest
import torch

from reprolab import distributed


def test_shard_weights_sum_to_the_batch_mean():
    batch = torch.arange(7).numpy()
    for world in (1, 2, 3, 8):
        shards = [distributed.shard(batch, distributed.Context(rank, rank, world)) for rank in range(world)]
        # DDP averages over `world`, so a row's share of the step is weight / (world * len(slice)):
        # 1/7 each, as in one process's mean over the batch.
        shares = [weight / (world * len(rows)) for rows, weight in shards if weight for _ in rows]
        assert shares == pytest.approx([1 / 7] * 7)
        assert sorted(int(i) for rows, weight in shards if weight for i in rows) == list(range(7))
        assert all(len(rows) == 1 for rows, weight in shards if weight == 0)
