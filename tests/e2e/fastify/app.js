'use strict'
// A small fastify 5 shop, instrumented the way a Node.js team would do it, exporting its spans over OTLP/HTTP
// to the otel-matomo gateway. The end-to-end test (tests/e2e/test_gateway_fastify.py) starts it with:
//   PORT                                  where to listen (127.0.0.1)
//   OTLP_ENCODING                         "json" (exporter-trace-otlp-http) or "protobuf" (exporter-trace-otlp-proto)
//   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT    the gateway's /v1/traces URL
//   OTEL_EXPORTER_OTLP_TRACES_HEADERS     "Authorization=Bearer%20<token>"
//   OTEL_EXPORTER_OTLP_TRACES_COMPRESSION "gzip" or "none"
//   OTEL_SERVICE_NAME, OTEL_BSP_SCHEDULE_DELAY
// The OpenTelemetry SDK must start before fastify is required, so that both instrumentations can hook it.

const { NodeSDK } = require('@opentelemetry/sdk-node')
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http')
const FastifyOtelInstrumentation = require('@fastify/otel')

function traceExporter () {
  if (process.env.OTLP_ENCODING === 'protobuf') {
    const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto')
    return new OTLPTraceExporter()
  }
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http')
  return new OTLPTraceExporter()
}

const sdk = new NodeSDK({
  traceExporter: traceExporter(),
  instrumentations: [
    // Without headersToSpanAttributes, Matomo gets no referrer, no language, and only the proxy's address.
    new HttpInstrumentation({
      headersToSpanAttributes: {
        server: { requestHeaders: ['referer', 'accept-language', 'x-forwarded-for', 'host'] }
      }
    }),
    new FastifyOtelInstrumentation({ registerOnInitialization: true })
  ]
})
sdk.start()

const fastify = require('fastify')
const app = fastify()

app.get('/', async () => ({ page: 'home' }))

app.get('/items/:id', async (request, reply) => {
  const id = Number(request.params.id)
  if (id > 100) {
    return reply.code(404).send({ error: 'no such item' })
  }
  return { item: id }
})

app.post('/api/cart', async () => ({ added: true }))

app.get('/boom', async () => {
  throw new Error('boom')
})

async function stop () {
  // Exit 1 rather than hang when the last spans cannot be flushed (the gateway unreachable keeps the exporter
  // retrying): the test reads the exit code.
  setTimeout(() => process.exit(1), 10000).unref()
  try {
    await app.close()
    await sdk.shutdown() // flushes the spans still in the batch processor
    process.exit(0)
  } catch (error) {
    console.error(error)
    process.exit(1)
  }
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) }).then(
  (address) => console.log(`listening on ${address}`),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
