"""One module per question; each imports infrastructure (`utils.*`), never another experiment module
(tests/test_architecture.py reads the imports).

| module | notebook | what |
|---|---|---|
| attacks | 02, 06 | FGSM, PGD (L-inf, L2), AutoAttack, robust accuracy, transfer matrix |
| texture_shape | 03, 08 | image modifications, cue conflict, shape bias, tile shuffle |
| cka, probes, transfer | 04 | representation similarity, linear probes per layer, transfer to new tasks |
| cost | 05 | parameters, FLOPs, activation memory, latency, throughput |
| ablations | 06 | named changes to the MLP recipe, trained through the store; adversarial training |
| feature_viz, recurrence, inversion | 08 | activation maximisation, periodicity and controls, inversion |
| dictionary, feature_matching, steering | 09 | sparse autoencoders, matching features across models |
"""
