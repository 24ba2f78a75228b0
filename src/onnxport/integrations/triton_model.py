"""Triton Python-backend model: raw text in, the onnxport pipeline's JSON answer out, one row per request row.

Written into ``REPO/NAME/1/model.py`` by ``onnxport triton``; the export sits beside it in ``1/export``.
The server's Python needs onnxport installed (``pip install onnxport``; numpy < 2 for the Python backend
of Triton 2.51, which the runtime supports). Each batch Triton's dynamic batcher hands over goes through
one pipeline call, which sorts its rows by token length, so ragged traffic still batches well. A row
that cannot be answered gets an error response naming the fault; the other requests are answered and
the instance keeps serving.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from onnxport.integrations import RowRunner, numbers_of, row_fields, stack_numbers, to_json
from onnxport.runtime import pipeline


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        export_dir = os.path.join(args["model_repository"], args["model_version"], "export")
        session = {}
        if parameters.get("intra_op_threads"):
            session["intra_op_threads"] = int(parameters["intra_op_threads"])
        self.task = parameters["task"]
        pipe = pipeline(self.task, export_dir, provider=parameters.get("provider", "cpu"),
                        batch_size=int(parameters.get("pipeline_batch_size", "32")), **session)
        fields = row_fields(pipe.model.spec.task)
        self.fields = fields
        self.inputs = {field.upper(): field for field in fields.all}
        # The numbers output (EMBEDDING, SCORES) as config.pbtxt declares it, or None for JSON-only tasks.
        numbers = {o["name"]: o for o in config.get("output", [])}.get((fields.numbers_name or "").upper())
        self.numbers = (numbers["name"], [int(d) for d in numbers["dims"]]) if numbers else None
        self.runner = RowRunner(pipe, self.task, json.loads(parameters.get("pipeline_kwargs", "{}")),
                                shown_names={field: name for name, field in self.inputs.items()})

    def execute(self, requests):
        rows, owners, refusals = [], [], {}
        counts = []
        for r, request in enumerate(requests):
            columns = {}
            for name, field in self.inputs.items():
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    columns[field] = tensor.as_numpy().reshape(-1)
            sizes = {len(column) for column in columns.values()}
            if len(sizes) > 1:
                refusals[r] = f"inputs {', '.join(n.upper() for n in columns)} have different batch sizes {sorted(sizes)}"
                counts.append(0)
                continue
            n = sizes.pop() if sizes else 1
            counts.append(n)
            for i in range(n):
                rows.append({field: column[i] for field, column in columns.items()})
                owners.append((r, i))
        answers = self.runner.run(rows)
        results = [[None] * n for n in counts]
        numbers = [[None] * n for n in counts]
        for (r, i), answer in zip(owners, answers):
            if isinstance(answer, Exception):
                refusals.setdefault(r, f"row {i}: {answer}")
            else:
                results[r][i] = to_json(answer).encode("utf-8")
                numbers[r][i] = numbers_of(self.fields, answer)
        responses = []
        for r in range(len(requests)):
            if r in refusals:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"onnxport {self.task}: {refusals[r]}")))
            else:
                result = np.array(results[r], dtype=np.object_).reshape(-1, 1)
                tensors = [pb_utils.Tensor("RESULT", result)]
                if self.numbers:  # left out when a result has no such form (feature-extraction's pooling='none')
                    name, dims = self.numbers
                    stacked = stack_numbers(numbers[r], dims)
                    if stacked is not None:
                        tensors.append(pb_utils.Tensor(name, stacked))
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
