package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.AppenderBase;
import ch.qos.logback.core.read.ListAppender;
import io.blkstack.block.IoErrorLog;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.config.MiniNbdClient;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import jdk.jfr.Recording;
import jdk.jfr.consumer.RecordedEvent;
import jdk.jfr.consumer.RecordingFile;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.slf4j.LoggerFactory;

/**
 * What an operator sees of NBD traffic: a log line when a client opens and closes an export (peer,
 * export, negotiated options), one per failed request (device, sector, status), and a JFR event
 * per request whose duration is its latency. Real TCP clients against a server over a memory
 * device and a dm {@code error} device; the JFR recording is started in-process and read back with
 * {@link RecordingFile}. Waits are on log lines the server writes after the fact (the "closed"
 * line comes after the connection's writer committed its last event), each bounded.
 */
class NbdLogsAndEventsTest {

    @TempDir
    Path tmp;

    private final List<String> log = new CopyOnWriteArrayList<>();
    private final BlockingQueue<String> logLines = new LinkedBlockingQueue<>();

    /** Takes the connection logger's lines as they are logged, for waiting on one. */
    private final class LineAppender extends AppenderBase<ILoggingEvent> {
        @Override
        protected void append(ILoggingEvent event) {
            log.add(event.getFormattedMessage());
            logLines.add(event.getFormattedMessage());
        }
    }

    // Proves: the open and close lines name the peer, the export and the options; a write and a
    // read each leave one blkstack.NbdRequest event with their command, offset, length, export and
    // error 0; a write to the error device leaves an event with EIO and one I/O error line naming
    // the device, the sector and the status.
    @Test
    @Timeout(120)
    void connectionsAndFailedRequestsAreLoggedAndEveryRequestIsAnEvent() throws Exception {
        Logger ioErrors = (Logger) LoggerFactory.getLogger(IoErrorLog.LOGGER);
        ListAppender<ILoggingEvent> errorLines = new ListAppender<>();
        errorLines.start();
        ioErrors.addAppender(errorLines);
        Logger connections = (Logger) LoggerFactory.getLogger(NbdServer.CONNECTION_LOGGER);
        LineAppender connectionLines = new LineAppender();
        connectionLines.start();
        connections.addAppender(connectionLines);
        Path file = tmp.resolve("nbd.jfr");
        try (TestKernel tk = new TestKernel("nbd-events", 64L << 20, Policies.defaults(), Faults.NONE);
                Recording recording = new Recording()) {
            recording.enable("blkstack.NbdRequest").withThreshold(Duration.ZERO);
            MemoryDevice memory = new MemoryDevice(tk.kernel, "dev-a", 1L << 20, 0);
            MappedDevice broken = new MappedDevice(tk.kernel, "broken",
                    Table.parse(tk.kernel, "broken", "0 2048 error\n", name -> null));
            NbdServer server = new NbdServer(tk.kernel, List.of(new Export("a", memory, false, ""),
                    new Export("bad", broken, false, "")),
                    NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0)));
            recording.start();
            try {
                server.start();
                byte[] data = new byte[8192];
                Arrays.fill(data, (byte) 0x5a);
                try (MiniNbdClient client = new MiniNbdClient(server.localAddress(), "a")) {
                    String opened = awaitLine("opened export a");
                    assertTrue(opened.matches("nbd: nbd-\\d+ \\(/127\\.0\\.0\\.1:\\d+\\): opened export a \\(.*replies.*\\)"),
                            opened);
                    assertEquals(0, client.write(65536, data));
                    assertArrayEquals(data, client.read(65536, data.length));
                }
                awaitLine("closed export a");
                try (MiniNbdClient client = new MiniNbdClient(server.localAddress(), "bad")) {
                    assertEquals(5, client.write(4096, data), "EIO from the error target");
                }
                awaitLine("closed export bad");
            } finally {
                server.close();
                recording.stop();
                broken.close();
            }
            recording.dump(file);
        } finally {
            ioErrors.detachAppender(errorLines);
            connections.detachAppender(connectionLines);
        }
        List<RecordedEvent> events = RecordingFile.readAllEvents(file).stream()
                .filter(e -> e.getEventType().getName().equals("blkstack.NbdRequest")).toList();
        Map<String, RecordedEvent> byCommand = new java.util.HashMap<>();
        for (RecordedEvent e : events) {
            byCommand.put(e.getString("export") + " " + e.getString("command"), e);
        }
        assertEquals(3, events.size(), "one event per request: " + events);
        RecordedEvent write = byCommand.get("a " + NbdProtocol.commandName(NbdProtocol.CMD_WRITE));
        RecordedEvent read = byCommand.get("a " + NbdProtocol.commandName(NbdProtocol.CMD_READ));
        RecordedEvent failed = byCommand.get("bad " + NbdProtocol.commandName(NbdProtocol.CMD_WRITE));
        assertNotNull(write, byCommand.keySet().toString());
        assertNotNull(read, byCommand.keySet().toString());
        assertNotNull(failed, byCommand.keySet().toString());
        for (RecordedEvent e : List.of(write, read)) {
            assertEquals(65536, e.getLong("offset"), e.toString());
            assertEquals(8192, e.getLong("length"), e.toString());
            assertEquals(0, e.getInt("errno"), e.toString());
            assertTrue(e.getString("connection").startsWith("nbd-"), e.toString());
            assertTrue(!e.getDuration().isNegative() && e.getDuration().compareTo(Duration.ofSeconds(120)) < 0,
                    "latency " + e.getDuration());
        }
        assertEquals(5, failed.getInt("errno"), failed.toString());

        List<String> errors = errorLines.list.stream().map(ILoggingEvent::getFormattedMessage).toList();
        assertEquals(1, errors.size(), errors.toString());
        assertTrue(errors.get(0).matches("I/O error, dev broken, sector 8 \\(16 sectors\\) op WRITE: EIO \\(nbd-\\d+\\)"),
                errors.get(0));
    }

    /** Waits (bounded) for the next log line containing {@code text}; returns it. */
    private String awaitLine(String text) throws InterruptedException {
        while (true) {
            String line = logLines.poll(30, TimeUnit.SECONDS);
            assertNotNull(line, "no log line containing '" + text + "' within 30 s; log: " + log);
            if (line.contains(text)) {
                return line;
            }
        }
    }
}
