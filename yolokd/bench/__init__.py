# yolokd, AGPL-3.0 License
"""``yolokd benchmark`` and ``yolokd sweep``: yolokd's methods side by side with Ultralytics' built-in distillation.

One run trains (or reuses) a teacher, then, for every seed and with the same data, epochs and hyper-parameters: the
student without distillation, the student with Ultralytics' built-in distillation (``distill_model=teacher.pt``,
``dis=6``: a score-weighted L2 on the neck features), the student with every yolokd method, and a combination of two
methods (by default the two best single methods on the VALIDATION split). Every training runs in its own process
(``python -m yolokd.bench.row --row spec.json``) so its peak memory is its own and a crash costs one row only.

Each final student is evaluated on the val split (used for choices such as the combination) and on the test split
(the reported one). Cost is measured in the same run: the mean wall time of a training iteration (between the
``on_train_batch_start`` and ``on_train_batch_end`` callbacks, without the first epoch and the first iterations of
every epoch) relative to the undistilled student's, and relative to the floor: the undistilled step plus one teacher
forward (timed in the undistilled row's process: eval, ``no_grad``, same batch size and image size).

Modules, each importing only those above it (no cycles):

- `ray_jobs`: the rows as Ray Tune trials (``executor=ray``).
- `config`: the keys (``BENCH_DEFAULTS``), presets, validation (`merge_config`) and `format_command`.
- `stats`: gap recovered (from the means over seeds), summaries, cost ratios, the combination choice, the targets.
- `timing`: `sync`, the device synchronisation around every timed call.
- `profile`: one distillation step's profile against its floor (`profile_method`), the plain teacher it times.
- `report`: the Markdown table and targets, the plot, the marker blocks of a published file.
- `row`: one row's process (`run_row`, ``python -m yolokd.bench.row``), its timing (`StepTimer`), its launcher.
- `plan`: the rows of a run, their names and specs, the combination row.
- `run`: `run_benchmark`, composed of the above.
- `sweep`: `run_sweep`, the val-split sweep of loss-weight scales on `run_benchmark`.

This file imports nothing, so that ``python -m yolokd.bench.row`` does not load the row module twice; import from
the modules: ``from yolokd.bench.run import run_benchmark``.
"""
