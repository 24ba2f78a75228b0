// transformers.js pipelines on export directories exactly as onnxport writes them: no option but the task,
// no file moved. Usage: node pipelines.mjs MANIFEST.json RESULTS.json
//   MANIFEST: [{"task": ..., "dir": export directory, "inputs": [...], "options": {...}}, ...]
//   RESULTS:  one answer list per case (for feature-extraction: {"dims", "data"} per input)
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const [manifestPath, resultsPath] = process.argv.slice(2);
const require = createRequire(process.env.ONNXPORT_JS_PREFIX + '/');
const { pipeline, env } = require('@huggingface/transformers');
env.allowRemoteModels = false; // local directories only: nothing is fetched from the Hub
env.localModelPath = '/';      // so that an absolute directory path is read as it is

const results = [];
for (const { task, dir, inputs, options } of JSON.parse(readFileSync(manifestPath, 'utf8'))) {
    const pipe = await pipeline(task, dir);
    const answers = [];
    for (const input of inputs) {
        const answer = task === 'question-answering'
            ? await pipe(input.question, input.context, options)
            : await pipe(input, options);
        answers.push(task === 'feature-extraction' ? { dims: answer.dims, data: Array.from(answer.data) } : answer);
    }
    results.push(answers);
    await pipe.dispose();
}
writeFileSync(resultsPath, JSON.stringify(results));
