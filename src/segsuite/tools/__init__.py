"""Dataset and model-zoo tools, each runnable as `python -m segsuite.tools.<name>` and as a console script.

    segsuite-verify-dataset     segsuite.tools.verify_dataset       check a dataset tree before training
    segsuite-class-weights      segsuite.tools.compute_class_weights class frequencies -> loss weights
    segsuite-prepare-voc-aug    segsuite.tools.prepare_voc_aug      VOC + SBD -> SegmentationClassAug/, train_aug.txt
    segsuite-browse             segsuite.tools.browse_dataset       image / mask overlays of a dataset
    segsuite-compare-runs       segsuite.tools.compare_runs         metrics of several runs side by side
    segsuite-zoo-publish        segsuite.tools.zoo_publish          publish a trained run as a zoo entry
"""
