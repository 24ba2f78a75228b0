// Runs export graphs with ONNX Runtime for Node (native) or for the Web (wasm, here under Node), as a user of
// either package would: the graph file (its external data beside it) and int64 feeds, every output returned.
// Usage: node ort_outputs.mjs node|web MANIFEST.json RESULTS.json
//   MANIFEST: [{"model": path, "feeds": {name: {"dims": [...], "data": [...]}}}, ...]
//   RESULTS:  [{name: {"dims": [...], "type": "float32", "data": [...]}}, ...] in manifest order
// Modules resolve from ONNXPORT_JS_PREFIX (the npm install outside the repository).
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename } from 'node:path';

const [backend, manifestPath, resultsPath] = process.argv.slice(2);
const require = createRequire(process.env.ONNXPORT_JS_PREFIX + '/');
const ort = require(backend === 'web' ? 'onnxruntime-web' : 'onnxruntime-node');
if (backend === 'web') {
    ort.env.wasm.numThreads = 1; // no worker threads under Node
}

async function session(model) {
    if (backend === 'node') {
        return ort.InferenceSession.create(model); // reads model.onnx_data beside it by itself
    }
    // The Web build reads no file system: the graph and its external data are handed over as bytes.
    const options = {};
    const data = `${model}_data`;
    if (existsSync(data)) {
        options.externalData = [{ path: basename(data), data: readFileSync(data) }];
    }
    return ort.InferenceSession.create(readFileSync(model), options);
}

const results = [];
for (const { model, feeds } of JSON.parse(readFileSync(manifestPath, 'utf8'))) {
    const run = await session(model);
    const inputs = {};
    for (const [name, { dims, data }] of Object.entries(feeds)) {
        inputs[name] = new ort.Tensor('int64', BigInt64Array.from(data, BigInt), dims);
    }
    const outputs = await run.run(inputs);
    const row = {};
    for (const [name, tensor] of Object.entries(outputs)) {
        row[name] = { dims: tensor.dims, type: tensor.type, data: Array.from(tensor.data, Number) };
    }
    results.push(row);
    await run.release();
}
writeFileSync(resultsPath, JSON.stringify(results));
