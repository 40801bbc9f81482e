"""A study on Ray Tune: the sweep scripts' command line (``cli``, ``flags``, ``options``), the
grid and its cohorts (``grid``, ``paper``), the dry-run plan (``plan``), the driver and its
trainable (``driver``, ``trainable``, ``checkpoints``), where trials run and what a failed one
gets (``cluster``, ``runtime``, ``retries``; a machine's node kind as ``ray start`` flags,
``node_kind``), the cluster and store checked before any work (``preflight``), and the
progress view (``progress``)."""
