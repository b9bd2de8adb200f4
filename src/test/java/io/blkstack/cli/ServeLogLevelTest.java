package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.blkstack.config.ConfigException;
import io.blkstack.config.MiniNbdClient;
import io.blkstack.config.StackConfig;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * {@code serve --log-level} and YAML {@code log-level}: bad values are refused with the value and
 * the choices, and the level decides which of serve's log lines reach stderr (a real serve process
 * with a real client, stopped with SIGTERM; its stderr is read once it has exited).
 */
class ServeLogLevelTest {

    private static final Pattern LISTENING = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)");
    private static final String CONFIG = """
            memory: 16MiB
            devices:
              m: { memory: 16MiB }
            exports:
              disk: { device: m }
            """;

    @TempDir
    Path tmp;

    // Proves both ways of giving a level refuse a word that is not one, naming it and the choices.
    @Test
    void badLevelsAreRefused() throws Exception {
        Path config = Files.writeString(tmp.resolve("s.yaml"), CONFIG);
        CommandLine commandLine = Main.commandLine();
        StringWriter err = new StringWriter();
        commandLine.setOut(new PrintWriter(new StringWriter(), true));
        commandLine.setErr(new PrintWriter(err, true));
        int code = commandLine.execute("serve", "--config", config.toString(), "--log-level", "loud");
        assertEquals(ExitCodes.USAGE, code, err.toString());
        assertTrue(err.toString().contains("--log-level: 'loud' is not one of error, warn, info, debug, trace"),
                err.toString());

        try {
            StackConfig.parse("s.yaml", CONFIG + "log-level: chatty\n", tmp);
            fail("log-level: chatty was accepted");
        } catch (ConfigException e) {
            assertTrue(e.getMessage().contains("s.yaml:6: log-level: 'chatty' is not one of error, warn, info"),
                    e.getMessage());
        }
        assertEquals("warn", StackConfig.parse("s.yaml", CONFIG + "log-level: warn\n", tmp).logLevel());
        assertEquals("info", StackConfig.parse("s.yaml", CONFIG, tmp).logLevelOrDefault());
    }

    // Proves the level filters: at the default (info) a client's open and close and the shutdown
    // steps are logged as "blkstack serve: ..." lines; with log-level: warn in the file the same
    // run logs none of them.
    @Test
    @Timeout(120)
    void levelDecidesWhatIsLogged() throws Exception {
        String info = serveOneClient(CONFIG, "info.err");
        assertTrue(info.matches("(?s).*blkstack serve: nbd: nbd-\\d+ \\(/127\\.0\\.0\\.1:\\d+\\): opened export disk .*"),
                info);
        assertTrue(info.contains("): closed export disk"), info);
        assertTrue(info.contains("blkstack serve: stopped; every device flushed and closed"), info);

        String warn = serveOneClient(CONFIG + "log-level: warn\n", "warn.err");
        assertFalse(warn.contains("opened export"), warn);
        assertFalse(warn.contains("stopped; every device"), warn);
    }

    /** Serves {@code yaml}, runs one client that writes a block, stops with SIGTERM; returns stderr. */
    private String serveOneClient(String yaml, String errName) throws Exception {
        Path config = Files.writeString(tmp.resolve("serve-" + errName + ".yaml"), yaml);
        Path stderr = tmp.resolve(errName);
        List<String> command = MainProcess.command("serve", "--config", config.toString(), "--listen", "127.0.0.1:0",
                "--control", tmp.resolve(errName + ".sock").toString());
        Process p = new ProcessBuilder(command).directory(tmp.toFile()).redirectError(stderr.toFile()).start();
        try {
            int port = awaitReady(p);
            try (MiniNbdClient client = new MiniNbdClient(new InetSocketAddress("127.0.0.1", port), "disk")) {
                assertEquals(0, client.write(0, new byte[4096]));
            }
            p.destroy(); // SIGTERM: drains (the client is gone), flushes, exits 0
            assertTrue(p.waitFor(60, TimeUnit.SECONDS), "serve did not stop after SIGTERM");
            assertEquals(0, p.exitValue(), Files.readString(stderr));
            return Files.readString(stderr);
        } finally {
            p.destroyForcibly();
        }
    }

    /** Reads stdout up to the ready line; returns the port. */
    private static int awaitReady(Process p) throws Exception {
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        List<String> lines = new ArrayList<>();
        int port = -1;
        for (String line; (line = out.readLine()) != null; ) {
            lines.add(line);
            Matcher m = LISTENING.matcher(line);
            if (m.find()) {
                port = Integer.parseInt(m.group(1));
            }
            if (line.equals(ServeCommand.READY)) {
                return port;
            }
        }
        fail("serve ended before it was ready: " + lines);
        return -1;
    }
}
