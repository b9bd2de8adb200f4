package io.blkstack.control;

import io.blkstack.kernel.Kernel;
import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * {@code serve --metrics ADDR:PORT}: {@code /metrics} in the Prometheus text format, served by the
 * official Prometheus Java client's HTTP server from a registry of this server's own (no global
 * registry: tests run many kernels). What it shows is {@link KernelMetrics}.
 *
 * <p>Scrapes run on at most {@link #THREADS_MAX} threads of their own with at most
 * {@link #QUEUE_MAX} waiting (more are refused), never on a data-path task.
 */
public final class MetricsServer implements AutoCloseable {

    /** Threads answering scrapes. */
    static final int THREADS_MAX = 2;
    /** Scrapes waiting for a thread; beyond this a connection is refused. */
    static final int QUEUE_MAX = 16;

    private final HTTPServer http;
    private final ThreadPoolExecutor threads;

    private MetricsServer(HTTPServer http, ThreadPoolExecutor threads) {
        this.http = http;
        this.threads = threads;
    }

    /**
     * Serves {@code kernel}'s metrics on {@code address} (port 0 picks a free port).
     *
     * @throws IOException the address cannot be bound
     */
    public static MetricsServer start(Kernel kernel, InetSocketAddress address) throws IOException {
        PrometheusRegistry registry = new PrometheusRegistry();
        registry.register(new KernelMetrics(kernel));
        AtomicInteger count = new AtomicInteger();
        ThreadPoolExecutor threads = new ThreadPoolExecutor(THREADS_MAX, THREADS_MAX, 60, TimeUnit.SECONDS,
                new ArrayBlockingQueue<>(QUEUE_MAX), r -> {
                    Thread t = new Thread(r, "blkstack-metrics-" + count.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                });
        threads.allowCoreThreadTimeOut(true);
        try {
            HTTPServer http = HTTPServer.builder().inetAddress(address.getAddress()).port(address.getPort())
                    .registry(registry).executorService(threads).buildAndStart();
            return new MetricsServer(http, threads);
        } catch (IOException | RuntimeException e) {
            threads.shutdownNow();
            throw new IOException("metrics: cannot listen on " + address + ": " + e.getMessage(), e);
        }
    }

    /** The port it listens on (the real one when started with port 0). */
    public int port() {
        return http.getPort();
    }

    /** Stops listening; a scrape under way is given a moment to finish. */
    @Override
    public void close() {
        http.close();
        threads.shutdownNow();
    }
}
