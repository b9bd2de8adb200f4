package io.blkstack.control;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.eclipse.jetty.client.ContentResponse;
import org.eclipse.jetty.client.HttpClient;
import org.eclipse.jetty.client.Request;
import org.eclipse.jetty.client.StringRequestContent;
import org.eclipse.jetty.io.Transport;

/**
 * The client side of the control socket, for {@code blkstack ctl}: Jetty's HTTP client over its
 * Unix-domain transport (the JDK's {@code HttpClient} cannot reach a Unix socket), Jackson for
 * the bodies. Every request has a deadline.
 */
public final class ControlClient implements AutoCloseable {

    /** A reply: HTTP status, content type and body text. */
    public record Reply(int status, String contentType, String body) {

        /** Whether the status is 2xx. */
        public boolean ok() {
            return status >= 200 && status < 300;
        }
    }

    private final Path socket;
    private final long timeoutNanos;
    private final HttpClient http = new HttpClient();
    private final ObjectMapper json = new ObjectMapper();

    /** A client of the server on {@code socket}; each request waits at most {@code timeoutNanos}. */
    public ControlClient(Path socket, long timeoutNanos) throws IOException {
        if (timeoutNanos <= 0) {
            throw new IllegalArgumentException("control client timeout " + timeoutNanos + " ns must be positive");
        }
        this.socket = socket;
        this.timeoutNanos = timeoutNanos;
        if (!Files.exists(socket)) {
            throw new IOException("no control socket at " + socket + " (is blkstack serve running? --socket PATH)");
        }
        try {
            http.setName("blkstack-ctl");
            http.start();
        } catch (Exception e) {
            throw new IOException("cannot start the HTTP client: " + e, e);
        }
    }

    /** Sends {@code method path} with {@code body} (an object Jackson writes, or null for none). */
    public Reply send(String method, String path, Object body) throws IOException {
        Request request = http.newRequest("http://localhost" + path)
                .method(method)
                .transport(new Transport.TCPUnix(socket))
                .timeout(timeoutNanos, TimeUnit.NANOSECONDS);
        if (body != null) {
            request.body(new StringRequestContent("application/json", json.writeValueAsString(body)));
        }
        return send(request, method, path);
    }

    /** Sends {@code method path} with a raw body text (tests send malformed JSON this way). */
    public Reply sendRaw(String method, String path, String body) throws IOException {
        Request request = http.newRequest("http://localhost" + path)
                .method(method)
                .transport(new Transport.TCPUnix(socket))
                .timeout(timeoutNanos, TimeUnit.NANOSECONDS)
                .body(new StringRequestContent("application/json", body));
        return send(request, method, path);
    }

    private Reply send(Request request, String method, String path) throws IOException {
        try {
            ContentResponse response = request.send();
            return new Reply(response.getStatus(), response.getMediaType(), response.getContentAsString());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(method + " " + path + ": interrupted", e);
        } catch (TimeoutException e) {
            throw new IOException(method + " " + path + ": no reply from " + socket + " within "
                    + TimeUnit.NANOSECONDS.toSeconds(timeoutNanos) + "s", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            throw new IOException("cannot reach the control socket " + socket + ": " + cause.getMessage(), cause);
        }
    }

    /** Parses a JSON reply body. */
    public JsonNode tree(Reply reply) throws IOException {
        try {
            return json.readTree(reply.body());
        } catch (JsonProcessingException e) {
            throw new IOException("the server's reply is not JSON: " + e.getOriginalMessage(), e);
        }
    }

    /** Parses a JSON reply body as {@code type}. */
    public <T> T read(Reply reply, Class<T> type) throws IOException {
        try {
            return json.readValue(reply.body(), type);
        } catch (JsonProcessingException e) {
            throw new IOException("the server's reply is not a " + type.getSimpleName() + ": " + e.getOriginalMessage(), e);
        }
    }

    @Override
    public void close() {
        try {
            http.stop();
        } catch (Exception e) {
            // nothing left to release
        }
    }
}
