package io.blkstack.control;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import io.blkstack.control.ControlApi.CreateRequest;
import io.blkstack.control.ControlApi.ExportRequest;
import io.blkstack.control.ControlApi.MessageRequest;
import io.blkstack.control.ControlApi.SuspendRequest;
import io.blkstack.control.ControlApi.TableRequest;
import io.blkstack.nbd.UnixSocketFile;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;
import org.eclipse.jetty.http.HttpHeader;
import org.eclipse.jetty.io.Content;
import org.eclipse.jetty.server.Handler;
import org.eclipse.jetty.server.HttpConfiguration;
import org.eclipse.jetty.server.HttpConnectionFactory;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.Response;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.handler.ErrorHandler;
import org.eclipse.jetty.server.handler.SizeLimitHandler;
import org.eclipse.jetty.unixdomain.server.UnixDomainServerConnector;
import org.eclipse.jetty.util.BlockingArrayQueue;
import org.eclipse.jetty.util.Callback;
import org.eclipse.jetty.util.Fields;
import org.eclipse.jetty.util.thread.QueuedThreadPool;

/**
 * The control socket of {@code blkstack serve}: HTTP/1.1 with JSON bodies on a Unix domain socket
 * (Jetty's Unix-domain connector; Jackson for JSON), so that {@code curl --unix-socket PATH
 * http://localhost/v1/devices} works the way it does for Docker's and Firecracker's APIs. It maps
 * routes to {@link LiveStack} operations; the README lists every route, body and error code.
 *
 * <p><b>The socket file.</b> Created with mode 0600 and no window in which anyone else could
 * connect: the connector binds inside a fresh directory of mode 0700 next to the path, the socket
 * is set to 0600, then renamed onto the path. A path that exists is probed first: if a server
 * answers on it, it is refused (another server owns it); a socket nobody answers on is stale
 * and replaced; anything else (a file, a directory) is refused. On {@link #close} the socket file
 * is removed if it is still the one this server created.
 *
 * <p><b>Never on the data path.</b> Requests run on the server's own bounded thread pool
 * ({@link #THREADS_MAX} threads, a job queue of at most {@link #QUEUE_MAX}), attached to the
 * kernel only for the operation; a slow or hung client holds one of these threads, never a
 * data-path task, and is cut after {@link #IDLE_TIMEOUT_MILLIS} of silence. Request bodies are
 * limited to {@link #BODY_BYTES_MAX}; a body is read in full before the request waits for its turn,
 * so a client that stops half-way holds no other request up.
 */
public final class ControlServer implements AutoCloseable {

    /** Threads serving the socket: its selector and acceptor and a few requests at once. */
    static final int THREADS_MAX = 8;
    /** Jobs waiting for a thread. */
    static final int QUEUE_MAX = 64;
    /** Largest request body accepted (a table of many lines fits easily). */
    static final long BODY_BYTES_MAX = 1L << 20;
    /** A control connection that sends nothing for this long is closed (a hung client frees its thread). */
    static final long IDLE_TIMEOUT_MILLIS = 30_000;
    /** The content type of JSON replies. */
    static final String JSON = "application/json";

    private final Path path;
    private final LiveStack live;
    private final Server server;
    private final ObjectMapper json = new ObjectMapper()
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES);
    private Object socketKey;

    private ControlServer(Path path, LiveStack live) {
        this.path = path;
        this.live = live;
        QueuedThreadPool threads = new QueuedThreadPool(THREADS_MAX, 2, 60_000,
                new BlockingArrayQueue<>(QUEUE_MAX, 0, QUEUE_MAX));
        threads.setName("blkstack-control");
        threads.setDaemon(true);
        this.server = new Server(threads);
    }

    /**
     * Claims {@code path} and starts serving {@code live} on it.
     *
     * @param log where a replaced stale socket is reported
     * @throws IOException the path is owned by a live server, is not a socket, or cannot be bound
     */
    public static ControlServer start(Path path, LiveStack live, Consumer<String> log) throws IOException {
        Path absolute = path.toAbsolutePath().normalize();
        if (absolute.toString().getBytes(StandardCharsets.UTF_8).length
                >= UnixDomainServerConnector.MAX_UNIX_DOMAIN_PATH_LENGTH) {
            throw new IOException("control socket " + absolute + ": the path is longer than a Unix socket allows ("
                    + (UnixDomainServerConnector.MAX_UNIX_DOMAIN_PATH_LENGTH - 1) + " bytes)");
        }
        claim(absolute, log);
        ControlServer control = new ControlServer(absolute, live);
        control.bind();
        return control;
    }

    /** Refuses a path a live server answers on (or that is not a socket); removes a stale socket. */
    static void claim(Path path, Consumer<String> log) throws IOException {
        UnixSocketFile.claim(path, "control socket", "--control", log);
    }

    /** Binds in a private directory, sets 0600, and renames the socket onto the path. */
    private void bind() throws IOException {
        Path parent = Objects.requireNonNull(path.getParent(), "control socket path has no directory");
        Path privateDir = Files.createTempDirectory(parent, ".ctl",
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Path bound = privateDir.resolve("s");
        try {
            HttpConfiguration http = new HttpConfiguration();
            http.setSendServerVersion(false);
            UnixDomainServerConnector connector = new UnixDomainServerConnector(server, 1, 1,
                    new HttpConnectionFactory(http));
            connector.setUnixDomainPath(bound);
            connector.setIdleTimeout(IDLE_TIMEOUT_MILLIS);
            server.addConnector(connector);
            SizeLimitHandler limit = new SizeLimitHandler(BODY_BYTES_MAX, -1);
            limit.setHandler(new Routes());
            server.setHandler(limit);
            server.setErrorHandler(new JsonErrors());
            try {
                server.start();
            } catch (IOException e) {
                throw e;
            } catch (Exception e) {
                throw new IOException("control socket " + path + ": cannot start: " + e, e);
            }
            Files.setPosixFilePermissions(bound, PosixFilePermissions.fromString("rw-------"));
            try {
                Files.move(bound, path, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("control socket " + path + ": cannot rename the socket into place: " + e, e);
            }
            socketKey = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS).fileKey();
        } catch (IOException | RuntimeException e) {
            stopQuietly();
            throw e;
        } finally {
            Files.deleteIfExists(bound);
            Files.deleteIfExists(privateDir);
        }
    }

    /** The socket's path. */
    public Path path() {
        return path;
    }

    /**
     * Stops serving, waits (bounded) for a request still under way in the stack, and removes the
     * socket file if it is still ours. The caller must be a task of the stack's kernel.
     */
    @Override
    public void close() {
        stopQuietly();
        live.close();
        try {
            if (socketKey != null && Files.exists(path, LinkOption.NOFOLLOW_LINKS) && socketKey.equals(
                    Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS).fileKey())) {
                Files.delete(path);
            }
        } catch (IOException e) {
            // another process replaced it, or it is gone: nothing of ours to remove
        }
    }

    private void stopQuietly() {
        try {
            server.stop();
        } catch (Exception e) {
            // stopping a half-started server: nothing more to release
        }
    }

    // ---- routes ------------------------------------------------------------------------------

    /** Maps method and path to a {@link LiveStack} operation and writes the JSON reply. */
    private final class Routes extends Handler.Abstract {

        @Override
        public boolean handle(Request request, Response response, Callback callback) {
            int status = 200;
            String type = JSON;
            String body;
            try {
                Reply reply = route(request);
                status = reply.status;
                if (reply.yaml != null) {
                    type = "application/yaml";
                    body = reply.yaml;
                } else {
                    body = json.writeValueAsString(reply.body);
                }
            } catch (ControlException e) {
                status = e.status();
                body = write(e.reply());
            } catch (JsonProcessingException | RuntimeException e) {
                status = 500;
                body = write(new ControlApi.ErrorReply(500, "internal", "internal error: " + e, null, null, null));
            }
            response.setStatus(status);
            response.getHeaders().put(HttpHeader.CONTENT_TYPE, type + "; charset=utf-8");
            Content.Sink.write(response, true, body.endsWith("\n") ? body : body + "\n", callback);
            return true;
        }

        private String write(Object value) {
            try {
                return json.writeValueAsString(value);
            } catch (JsonProcessingException e) {
                return "{\"status\":500,\"error\":\"internal\"}";
            }
        }

        /** The operation for this request. */
        private Reply route(Request request) throws ControlException {
            String method = request.getMethod();
            String path = request.getHttpURI().getDecodedPath();
            if (path == null || !path.startsWith(ControlApi.PREFIX + "/")) {
                throw unknownRoute(method, path);
            }
            List<String> parts = Arrays.asList(path.substring(ControlApi.PREFIX.length() + 1).split("/", -1));
            if (!parts.isEmpty() && parts.get(parts.size() - 1).isEmpty()) {
                parts = parts.subList(0, parts.size() - 1); // a trailing slash
            }
            String head = parts.isEmpty() ? "" : parts.get(0);
            return switch (head) {
                case "devices" -> devices(request, method, parts);
                case "exports" -> exports(request, method, parts);
                case "stats" -> {
                    allow(method, path, "GET");
                    if (parts.size() == 1) {
                        yield Reply.ok(live.stats());
                    }
                    requireParts(parts, 2, method, path);
                    yield Reply.ok(live.stats(parts.get(1)));
                }
                case "dump" -> {
                    requireParts(parts, 1, method, path);
                    allow(method, path, "GET");
                    yield Reply.yaml(live.dump());
                }
                default -> throw unknownRoute(method, path);
            };
        }

        private Reply devices(Request request, String method, List<String> parts) throws ControlException {
            String path = ControlApi.PREFIX + "/" + String.join("/", parts);
            if (parts.size() == 1) {
                allow(method, path, "GET", "POST");
                if (method.equals("GET")) {
                    return Reply.ok(live.list());
                }
                CreateRequest create = read(request, CreateRequest.class, false);
                return new Reply(201, live.create(create.name(), create.table()), null);
            }
            String name = parts.get(1);
            if (parts.size() == 2) {
                allow(method, path, "GET", "DELETE");
                return Reply.ok(method.equals("GET") ? live.info(name) : live.remove(name));
            }
            if (parts.size() != 3) {
                throw unknownRoute(method, path);
            }
            switch (parts.get(2)) {
                case "table" -> {
                    allow(method, path, "GET", "PUT");
                    if (method.equals("GET")) {
                        return Reply.ok(live.table(name));
                    }
                    TableRequest load = read(request, TableRequest.class, false);
                    return Reply.ok(live.load(name, load.table()));
                }
                case "status" -> {
                    allow(method, path, "GET");
                    return Reply.ok(live.status(name));
                }
                case "suspend", "resume" -> {
                    allow(method, path, "POST");
                    SuspendRequest s = read(request, SuspendRequest.class, true);
                    String timeout = s == null ? null : s.timeout();
                    return Reply.ok(parts.get(2).equals("suspend") ? live.suspend(name, timeout)
                            : live.resume(name, timeout));
                }
                case "reload" -> {
                    allow(method, path, "POST");
                    TableRequest reload = read(request, TableRequest.class, false);
                    return Reply.ok(live.reload(name, reload.table(), reload.timeout()));
                }
                case "message" -> {
                    allow(method, path, "POST");
                    MessageRequest m = read(request, MessageRequest.class, false);
                    return Reply.ok(live.message(name, m.sector(), m.message()));
                }
                default -> throw unknownRoute(method, path);
            }
        }

        private Reply exports(Request request, String method, List<String> parts) throws ControlException {
            String path = ControlApi.PREFIX + "/" + String.join("/", parts);
            if (parts.size() == 1) {
                allow(method, path, "GET", "POST");
                if (method.equals("GET")) {
                    return Reply.ok(new ControlApi.ExportList(live.exports()));
                }
                ExportRequest add = read(request, ExportRequest.class, false);
                return new Reply(201, live.addExport(add.name(), add.device(), Boolean.TRUE.equals(add.readonly()),
                        add.description()), null);
            }
            if (parts.size() == 3 && parts.get(2).equals("stats")) {
                allow(method, path, "GET");
                return Reply.ok(live.exportStats(parts.get(1)));
            }
            if (parts.size() != 2) {
                throw unknownRoute(method, path);
            }
            allow(method, path, "DELETE");
            Fields query = Request.extractQueryParameters(request);
            String force = query.getValue("force");
            if (force != null && !force.equals("true") && !force.equals("false")) {
                throw new ControlException(400, "bad-request", "'force' must be true or false", null, null, force);
            }
            return Reply.ok(live.removeExport(parts.get(1), "true".equals(force)));
        }

        /** Parses the body as {@code type}; an empty body is null if {@code optional}, else refused. */
        private <T> T read(Request request, Class<T> type, boolean optional) throws ControlException {
            String text;
            try {
                text = Content.Source.asString(request, StandardCharsets.UTF_8);
            } catch (IOException e) {
                throw new ControlException(400, "bad-body", "cannot read the request body: " + e.getMessage(), null);
            }
            if (text == null || text.isBlank()) {
                if (optional) {
                    return null;
                }
                throw new ControlException(400, "bad-json", "the request needs a JSON body ("
                        + type.getSimpleName() + ")", null);
            }
            try {
                T value = json.readValue(text, type);
                if (value == null) {
                    throw new ControlException(400, "bad-json", "the body is null, not a JSON object", null);
                }
                return value;
            } catch (UnrecognizedPropertyException e) {
                throw new ControlException(400, "bad-json", "unknown field '" + e.getPropertyName() + "' (known: "
                        + e.getKnownPropertyIds() + ")", null, e.getLocation() == null ? null : e.getLocation().getLineNr(),
                        e.getPropertyName());
            } catch (JsonProcessingException e) {
                Integer line = e.getLocation() == null ? null : e.getLocation().getLineNr();
                throw new ControlException(400, "bad-json", "not valid JSON for " + type.getSimpleName() + ": "
                        + e.getOriginalMessage() + (e.getLocation() == null ? "" : " at line "
                        + e.getLocation().getLineNr() + " column " + e.getLocation().getColumnNr()), null, line, null);
            }
        }
    }

    /**
     * Errors Jetty itself replies with (a body over {@link #BODY_BYTES_MAX}: 413; a request it
     * cannot parse: 400) as the same JSON shape as every other error, code {@code http}.
     */
    private final class JsonErrors extends ErrorHandler {
        @Override
        protected void generateResponse(Request request, Response response, int code, String message,
                Throwable cause, Callback callback) {
            String text = message != null ? message : cause != null ? cause.getMessage() : "HTTP error " + code;
            response.getHeaders().put(HttpHeader.CONTENT_TYPE, JSON + "; charset=utf-8");
            String body;
            try {
                body = json.writeValueAsString(new ControlApi.ErrorReply(code, "http", text, null, null, null));
            } catch (JsonProcessingException e) {
                body = "{\"status\":" + code + ",\"error\":\"http\"}";
            }
            Content.Sink.write(response, true, body + "\n", callback);
        }
    }

    private static void requireParts(List<String> parts, int n, String method, String path) throws ControlException {
        if (parts.size() != n) {
            throw unknownRoute(method, path);
        }
    }

    /** Refuses a method the route does not take (405, with the ones it does). */
    private static void allow(String method, String path, String... methods) throws ControlException {
        for (String m : methods) {
            if (m.equals(method)) {
                return;
            }
        }
        throw new ControlException(405, "bad-method", method + " " + path + ": allowed: " + String.join(", ", methods),
                null, null, method);
    }

    private static ControlException unknownRoute(String method, String path) {
        return new ControlException(404, "unknown-route", "no route " + method + " " + path + " (routes: "
                + ControlApi.PREFIX + "/devices[/NAME[/table|status|suspend|resume|reload|message]], "
                + ControlApi.PREFIX + "/exports[/NAME[/stats]], " + ControlApi.PREFIX + "/stats[/NAME], " + ControlApi.PREFIX
                + "/dump; see the README)",
                null, null, path);
    }

    /** A reply: status and a JSON body, or a YAML text. */
    private record Reply(int status, Object body, String yaml) {
        static Reply ok(Object body) {
            return new Reply(200, body, null);
        }

        static Reply yaml(String text) {
            return new Reply(200, null, text);
        }
    }
}
