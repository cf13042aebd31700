"""Writes the per-layer parameter (= gradient) shapes of ResNet-50 and BERT-base,
in registration order, as the JSON files beside this script. The architectures
are spelled out here (torchvision's ResNet-50, Hugging Face's bert-base-uncased
with its pooler); the parameter counts are checked against the published totals.

    python -m collex.bench.shapes.generate
"""

from __future__ import annotations

import json
import math
import os


def resnet50() -> list[tuple[str, list[int]]]:
    p: list[tuple[str, list[int]]] = []

    def conv(name, cin, cout, k):
        p.append((f"{name}.weight", [cout, cin, k, k]))

    def bn(name, c):
        p.append((f"{name}.weight", [c]))
        p.append((f"{name}.bias", [c]))

    conv("conv1", 3, 64, 7)
    bn("bn1", 64)
    cin = 64
    for layer, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            pre = f"layer{layer}.{b}"
            conv(f"{pre}.conv1", cin, width, 1)
            bn(f"{pre}.bn1", width)
            conv(f"{pre}.conv2", width, width, 3)
            bn(f"{pre}.bn2", width)
            conv(f"{pre}.conv3", width, width * 4, 1)
            bn(f"{pre}.bn3", width * 4)
            if b == 0:
                conv(f"{pre}.downsample.0", cin, width * 4, 1)
                bn(f"{pre}.downsample.1", width * 4)
            cin = width * 4
    p.append(("fc.weight", [1000, 2048]))
    p.append(("fc.bias", [1000]))
    return p


def bert_base() -> list[tuple[str, list[int]]]:
    h, ff, vocab, positions, layers = 768, 3072, 30522, 512, 12
    p: list[tuple[str, list[int]]] = [
        ("embeddings.word_embeddings.weight", [vocab, h]),
        ("embeddings.position_embeddings.weight", [positions, h]),
        ("embeddings.token_type_embeddings.weight", [2, h]),
        ("embeddings.LayerNorm.weight", [h]),
        ("embeddings.LayerNorm.bias", [h]),
    ]
    for i in range(layers):
        pre = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            p += [(f"{pre}.attention.self.{name}.weight", [h, h]), (f"{pre}.attention.self.{name}.bias", [h])]
        p += [
            (f"{pre}.attention.output.dense.weight", [h, h]),
            (f"{pre}.attention.output.dense.bias", [h]),
            (f"{pre}.attention.output.LayerNorm.weight", [h]),
            (f"{pre}.attention.output.LayerNorm.bias", [h]),
            (f"{pre}.intermediate.dense.weight", [ff, h]),
            (f"{pre}.intermediate.dense.bias", [ff]),
            (f"{pre}.output.dense.weight", [h, ff]),
            (f"{pre}.output.dense.bias", [h]),
            (f"{pre}.output.LayerNorm.weight", [h]),
            (f"{pre}.output.LayerNorm.bias", [h]),
        ]
    p += [("pooler.dense.weight", [h, h]), ("pooler.dense.bias", [h])]
    return p


# Published parameter counts: torchvision resnet50, bert-base-uncased (BertModel).
EXPECTED = {"resnet50": 25_557_032, "bert_base": 109_482_240}


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for name, build in (("resnet50", resnet50), ("bert_base", bert_base)):
        params = build()
        total = sum(math.prod(s) for _, s in params)
        assert total == EXPECTED[name], (name, total)
        # One tensor per line, so that the files read (and diff) as a table.
        lines = ",\n".join(f"  {json.dumps([n, s])}" for n, s in params)
        with open(os.path.join(here, f"{name}.json"), "w") as f:
            f.write(f'{{"model": "{name}", "parameters": {total}, "shapes": [\n{lines}\n]}}\n')
        print(f"{name}: {len(params)} tensors, {total} parameters")


if __name__ == "__main__":
    main()
