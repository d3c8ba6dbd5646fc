"""Hand-made submission trees for checker tests, from real short-run LoadGen logs (tests/data/loadgen/).

The logs come from 20-sample runs of the tiny random BERT: every tree made here is a short run, so the
official checker finds the short-run complaints in it; the system and measurement files are filled in
so that nothing else is wrong unless a test breaks something on purpose.
"""
import json
import os
import shutil

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "loadgen")
FIELDS = ("division submitter status system_name number_of_nodes host_processor_model_name host_processors_per_node "
          "host_processor_core_count host_memory_capacity host_storage_capacity host_storage_type "
          "accelerators_per_node accelerator_model_name accelerator_memory_capacity framework operating_system "
          "system_type other_software_stack host_processor_frequency host_processor_caches "
          "host_memory_configuration host_processor_interconnect host_networking host_networking_topology "
          "accelerator_frequency accelerator_host_interconnect accelerator_interconnect "
          "accelerator_interconnect_topology accelerator_memory_configuration accelerator_on-chip_memories cooling "
          "hw_notes sw_notes host_network_card_count system_type_detail").split()


def system_json(division, submitter, system):
    values = {k: "n/a" for k in FIELDS}
    values.update(division=division, submitter=submitter, status="available", system_name=system,
                  number_of_nodes="1", host_processors_per_node="1", host_processor_core_count="2",
                  accelerators_per_node="0", accelerator_model_name="N/A", framework="onnxruntime 1.23.2",
                  operating_system="Linux", system_type="edge", host_processor_model_name="a CPU",
                  host_memory_capacity="8 GB", host_network_card_count="1")
    return values


def make_tree(root, division="open", submitter="MyTeam", system="sys1", benchmark="bert-99",
              scenarios=("Offline", "SingleStream")):
    """root/<division>/<submitter>/... with one result per scenario; returns root."""
    top = os.path.join(root, division, submitter)
    os.makedirs(os.path.join(top, "systems"), exist_ok=True)
    with open(os.path.join(top, "systems", system + ".json"), "w") as f:
        json.dump(system_json(division, submitter, system), f, indent=1)
    os.makedirs(os.path.join(top, "src", benchmark), exist_ok=True)
    with open(os.path.join(top, "src", benchmark, "README.md"), "w") as f:
        f.write("the code that ran\n")
    for scenario in scenarios:
        folder = os.path.join(top, "results", system, benchmark, scenario)
        perf = os.path.join(folder, "performance", "run_1")
        os.makedirs(perf)
        for name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
            shutil.copy(os.path.join(DATA, scenario.lower() + "-perf", name), perf)
        acc = os.path.join(folder, "accuracy")
        shutil.copytree(os.path.join(DATA, "offline-acc"), acc)
        with open(os.path.join(acc, "mlperf_log_accuracy.json"), "w") as f:
            f.write("[\n]\n")
        with open(os.path.join(folder, "user.conf"), "w") as f:
            f.write(f"*.{scenario}.min_duration = 0\n")
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write("how to reproduce\n")
        with open(os.path.join(folder, "measurements.json"), "w") as f:
            json.dump({"input_data_types": "int64", "retraining": "no", "starting_weights_filename": "random",
                       "weight_data_types": "fp32", "weight_transformations": "none"}, f)
    return root
