"""A discrete-event model (SimGrid) of dvla_hpc's lanes, data plane and weight tree, calibrated here.

    python -m analysis.scaling_model.calibrate     # measure lane costs and MPI -> calibration.json
    python -m analysis.scaling_model.validate      # simulate the real 4/8/16-rank runs, print errors
    python -m analysis.scaling_model.predict       # 512 / 4096 ranks on a GPU fat tree: table, JSON, plots
    python -m analysis.scaling_model.flow_check    # the flow budget as coded against the former one
"""
