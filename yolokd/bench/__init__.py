# yolokd, AGPL-3.0 License
"""``yolokd benchmark`` and ``yolokd sweep``: yolokd's methods side by side with Ultralytics' built-in distillation.

Per seed, with the same data and hyper-parameters: the undistilled student, the built-in distillation, every yolokd
method and a combination of two, each row trained in its own process and evaluated on val (for choices) and test
(reported); cost is the mean iteration time against the undistilled student's and the floor (plus one teacher
forward). Modules: `ray_jobs`, `config`, `stats`, `timing`, `profile`, `report`, `row`, `plan`, `run`, `sweep`.

This file imports nothing (so ``python -m yolokd.bench.row`` loads the row module once); import from the modules.
"""
