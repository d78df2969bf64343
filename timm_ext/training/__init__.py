"""The parts of ``python -m timm_ext.train``, one concern per module.

``flags`` (command line, ``-c`` configs, refusals), ``data`` (datasets, loaders, losses), ``optim`` (optimizer,
learning rate, loss scaler), ``loop`` (the update loop and evaluation), ``outputs`` (output directory, args.yaml,
checkpoints, resume, summaries).
"""
