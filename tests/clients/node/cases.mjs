// Drives the npm `openai` client against the mesh's HTTP door and prints what came back, one JSON object.
//
//   node cases.mjs <client dir> <base URL> [case ...]
//
// <client dir> is tests/clients/node/openai<major> (its node_modules holds that major); with no case
// names every case runs. Each case's result (or the error it threw) is printed under its name, so
// tests/router/test_node_openai_client.py asserts on what this SDK parsed, not on the raw wire.
import path from "node:path";
import { pathToFileURL } from "node:url";

const [clientDir, baseURL, ...wanted] = process.argv.slice(2);
const sdk = await import(pathToFileURL(path.resolve(clientDir, "node_modules/openai/index.mjs")).href);
const OpenAI = sdk.default;
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "unused", maxRetries: 0, timeout: 20_000 });

const USER = [{ role: "user", content: "hi there" }];
const MONTHLY = "what is the monthly total?";
const PARAMETERS = { type: "object", properties: { x: { type: "string" } } };
const CHAT_TOOLS = ["current_time", "calculator"].map((name) => ({
  type: "function",
  function: { name, description: `the ${name} tool`, parameters: PARAMETERS },
}));
const RESPONSE_TOOLS = ["current_time", "calculator"].map((name) => ({
  type: "function",
  name,
  description: `the ${name} tool`,
  parameters: PARAMETERS,
}));
const RESULTS = { current_time: "12:00", calculator: "14808" };
// Scripts the mock for one request (the door passes `llmmesh` through) and turns off router retries.
const mock = (options) => ({ llmmesh: { max_retries: 0, extensions: { mock: options } } });
// The adapter sends the chunks already waiting as one message; a paced mock keeps one chunk per SSE event.
const PACED = mock({ stream_chunk_delay_ms: 20 });

// The SDK's own error class (by instanceof, not by name) and the fields it parsed from the body.
function classify(error) {
  const classes = ["BadRequestError", "NotFoundError", "RateLimitError", "AuthenticationError", "APIError"];
  const found = classes.find((name) => error instanceof sdk[name]);
  if (!found) throw error;
  return {
    class: found,
    status: error.status ?? null,
    code: error.code ?? null,
    param: error.param ?? null,
    type: error.type ?? null,
    message: error.message,
    retry_after: error.headers?.get?.("retry-after") ?? null,
    retry_after_ms: error.headers?.get?.("retry-after-ms") ?? null,
  };
}

async function caught(promise) {
  try {
    await promise;
  } catch (error) {
    return classify(error);
  }
  return { class: null };
}

const cases = {
  async chat() {
    const { data, response } = await client.chat.completions
      .create({ model: "small", messages: USER })
      .withResponse();
    return {
      text: data.choices[0].message.content,
      model: data.model,
      finish_reason: data.choices[0].finish_reason,
      usage: data.usage,
      provider_header: response.headers.get("x-llmmesh-provider"),
      attempts_header: JSON.parse(response.headers.get("x-llmmesh-attempts") ?? "null"),
    };
  },

  async stream() {
    const stream = await client.chat.completions.create({
      model: "mock-large",
      messages: [{ role: "user", content: "one two three four" }],
      stream: true,
      stream_options: { include_usage: true },
      ...PACED,
    });
    const deltas = [];
    let finish = null;
    let usage = null;
    let llmmesh = null;
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        if (choice.delta.content) deltas.push(choice.delta.content);
        finish = choice.finish_reason ?? finish;
      }
      usage = chunk.usage ?? usage;
      llmmesh = chunk.llmmesh ?? llmmesh;
    }
    return { deltas, finish_reason: finish, usage, answered_by: llmmesh?.attempts?.map((a) => a.model) };
  },

  async stream_cut() {
    const stream = await client.chat.completions.create({
      model: "mock-large",
      messages: [{ role: "user", content: "a b c d e f" }],
      stream: true,
      ...mock({ stream_cut_after: 3 }),
    });
    const received = [];
    const error = await caught(
      (async () => {
        for await (const chunk of stream) received.push(chunk.choices[0]?.delta.content ?? "");
      })(),
    );
    return { text: received.join(""), error };
  },

  async tools() {
    const question = { role: "user", content: MONTHLY };
    const first = await client.chat.completions.create({
      model: "mock-agent",
      messages: [question],
      tools: CHAT_TOOLS,
      tool_choice: "auto",
    });
    const message = first.choices[0].message;
    const calls = message.tool_calls ?? [];
    const results = calls.map((call) => ({ role: "tool", tool_call_id: call.id, content: RESULTS[call.function.name] }));
    const second = await client.chat.completions.create({
      model: "mock-agent",
      messages: [question, message, ...results],
      tools: CHAT_TOOLS,
      tool_choice: { type: "function", function: { name: "calculator" } },
    });
    return {
      finish_reason: first.choices[0].finish_reason,
      calls: calls.map((call) => ({ id: call.id, name: call.function.name, arguments: JSON.parse(call.function.arguments) })),
      answer: second.choices[0].message.content,
      final_finish_reason: second.choices[0].finish_reason,
    };
  },

  async responses() {
    const response = await client.responses.create({ model: "small", input: "hi there", instructions: "be brief" });
    return {
      id: response.id,
      status: response.status,
      model: response.model,
      output_text: response.output_text,
      output_types: response.output.map((item) => item.type),
      instructions: response.instructions,
      usage: response.usage,
    };
  },

  async responses_stream() {
    const stream = await client.responses.create({ model: "mock-small", input: "one two three", stream: true, ...PACED });
    const events = [];
    for await (const event of stream) events.push(event);
    const completed = events.at(-1)?.response;
    return {
      types: events.map((event) => event.type),
      sequence: events.map((event) => event.sequence_number),
      text: events.filter((event) => event.type === "response.output_text.delta").map((event) => event.delta).join(""),
      completed_text: completed?.output?.[0]?.content?.[0]?.text ?? null,
      completed_status: completed?.status ?? null,
    };
  },

  // The SDK's stream helper, which rebuilds the response from the events and checks their order itself.
  async responses_stream_helper() {
    const stream = client.responses.stream({ model: "mock-small", input: "five six" });
    const deltas = [];
    stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
    const final = await stream.finalResponse();
    return { deltas, output_text: final.output_text, status: final.status };
  },

  async responses_tools() {
    const first = await client.responses.create({ model: "mock-agent", input: MONTHLY, tools: RESPONSE_TOOLS });
    const calls = first.output.filter((item) => item.type === "function_call");
    const outputs = calls.map((call) => ({ type: "function_call_output", call_id: call.call_id, output: RESULTS[call.name] }));
    const second = await client.responses.create({
      model: "mock-agent",
      input: [{ role: "user", content: MONTHLY }, ...first.output, ...outputs],
      tools: RESPONSE_TOOLS,
      tool_choice: { type: "function", name: "calculator" },
    });
    return {
      output_types: first.output.map((item) => item.type),
      calls: calls.map((call) => ({ name: call.name, arguments: JSON.parse(call.arguments) })),
      answer: second.output_text,
    };
  },

  async embeddings() {
    // No encoding_format: the SDK asks for base64 and decodes it itself.
    const decoded = await client.embeddings.create({ model: "vec-a", input: ["one two", "three"] });
    const floats = await client.embeddings.create({ model: "vec-a", input: ["one two", "three"], encoding_format: "float" });
    const short = await client.embeddings.create({ model: "vec-a", input: "short", dimensions: 3, encoding_format: "float" });
    return {
      decoded: decoded.data.map((item) => Array.from(item.embedding)),
      floats: floats.data.map((item) => item.embedding),
      indexes: decoded.data.map((item) => item.index),
      usage: decoded.usage,
      model: decoded.model,
      short_length: short.data[0].embedding.length,
      short_norm: Math.hypot(...short.data[0].embedding),
    };
  },

  async errors() {
    return {
      unknown_model: await caught(client.chat.completions.create({ model: "mock-smal", messages: USER })),
      bad_field: await caught(client.chat.completions.create({ model: "mock-small", messages: USER, temperature: 5 })),
      context_window: await caught(
        client.chat.completions.create({ model: "mock-small", messages: [{ role: "user", content: "word ".repeat(9000) }] }),
      ),
      stored_response: await caught(client.responses.create({ model: "mock-small", input: "hi", previous_response_id: "resp_1" })),
      rate_limited: await caught(
        client.chat.completions.create({ model: "mock-small", messages: USER, ...mock({ fail_code: "RESOURCE_EXHAUSTED", retry_after_s: 0.2 }) }),
      ),
      unknown_embedding_model: await caught(client.embeddings.create({ model: "vec-b", input: "x" })),
    };
  },
};

const out = {};
for (const name of wanted.length ? wanted : Object.keys(cases)) {
  if (!cases[name]) throw new Error(`no case ${name}; the cases: ${Object.keys(cases).join(", ")}`);
  try {
    out[name] = await cases[name]();
  } catch (error) {
    out[name] = { failed: `${error?.constructor?.name}: ${error?.message}`, stack: error?.stack };
  }
}
process.stdout.write(`${JSON.stringify(out)}\n`);
