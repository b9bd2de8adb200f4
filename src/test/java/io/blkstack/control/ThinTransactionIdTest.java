package io.blkstack.control;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.TestKernel;
import io.blkstack.cli.Main;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.NbdServer;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * dm-thin's {@code set_transaction_id OLD NEW} through {@code blkstack ctl message}, on a pool over
 * files: the id starts at 0 and is the first field of {@code ctl status pool}; a message whose OLD
 * is not the current id is refused naming the current one and changes nothing; an accepted one
 * is committed at once, so after the whole stack is closed and built again from the same files
 * (a restart) the status shows it, and it is OLD for the next change. Other commits (a
 * {@code create_thin}) leave it alone.
 */
class ThinTransactionIdTest {

    private static final String CONFIG = """
            memory: 16MiB
            control: ctl.sock
            devices:
              meta: { file: thin/meta.img, size: 4MiB }
              data: { file: thin/data.img, size: 16MiB }
            mapped:
              pool: "0 32768 thin-pool meta data 128 16"
            exports:
              pool: { device: pool, readonly: true }
            """;

    @TempDir
    Path tmp;

    /** One running server: kernel, stack, NBD server and control socket, closed in reverse. */
    private final class Running implements AutoCloseable {
        final TestKernel tk;
        final Stack stack;
        final NbdServer server;
        final ControlServer control;
        final Path socket;

        Running(String name) throws Exception {
            StackConfig config = StackConfig.parse("thin.yaml", CONFIG, tmp);
            tk = new TestKernel(name, config.memoryBytes(), Policies.defaults(), Faults.NONE);
            stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE);
            server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            server.start();
            socket = config.controlPath();
            List<String> log = new CopyOnWriteArrayList<>();
            control = ControlServer.start(socket, new LiveStack(tk.kernel, stack, server, config, 5_000_000_000L,
                    log::add), log::add);
        }

        @Override
        public void close() {
            control.close();
            server.close();
            stack.close();
            tk.close();
        }

        /** {@code blkstack ctl --socket SOCKET args...} in-process: exit code, stdout, stderr. */
        String[] ctl(String... args) {
            CommandLine commandLine = Main.commandLine();
            StringWriter out = new StringWriter();
            StringWriter err = new StringWriter();
            commandLine.setOut(new PrintWriter(out, true));
            commandLine.setErr(new PrintWriter(err, true));
            List<String> all = new ArrayList<>(List.of("ctl", "--socket", socket.toString()));
            all.addAll(Arrays.asList(args));
            int code = commandLine.execute(all.toArray(new String[0]));
            return new String[] {Integer.toString(code), out.toString(), err.toString()};
        }

        String ok(String... args) {
            String[] r = ctl(args);
            assertEquals("0", r[0], String.join(" ", args) + ": " + r[2]);
            return r[1];
        }

        /** The first field of the pool's status line (after start, length and target name). */
        long transactionId() {
            String line = ok("status", "pool");
            String[] words = line.strip().split(" ");
            assertEquals("thin-pool", words[2], line);
            return Long.parseLong(words[3]);
        }
    }

    @Test
    @Timeout(120)
    void setTransactionIdIsCheckedCommittedAndSurvivesARestart() throws Exception {
        try (Running first = new Running("txid-1")) {
            assertEquals(0, first.transactionId(), "a formatted pool starts at transaction id 0");
            first.ok("message", "pool", "0", "create_thin", "1");
            assertEquals(0, first.transactionId(), "a commit is not a transaction id change");

            String[] wrong = first.ctl("message", "pool", "0", "set_transaction_id 3 4");
            assertEquals("1", wrong[0], wrong[2]);
            assertTrue(wrong[2].contains("set_transaction_id 3 4") && wrong[2].contains("current transaction id is 0"),
                    wrong[2]);
            assertEquals(0, first.transactionId(), "a refused change changes nothing");

            String[] words = first.ctl("message", "pool", "0", "set_transaction_id 0");
            assertEquals("1", words[0]);
            assertTrue(words[2].contains("usage set_transaction_id <current id> <new id>"), words[2]);
            String[] negative = first.ctl("message", "pool", "0", "set_transaction_id 0 -1");
            assertEquals("1", negative[0]);
            assertTrue(negative[2].contains("'-1' is not a transaction id"), negative[2]);

            first.ok("message", "pool", "0", "set_transaction_id 0 41");
            assertEquals(41, first.transactionId());
            first.ok("message", "pool", "0", "set_transaction_id", "41", "42");
            assertEquals(42, first.transactionId());
            first.ok("message", "pool", "0", "create_thin", "2");
            assertEquals(42, first.transactionId(), "later commits keep the id");
        }
        try (Running second = new Running("txid-2")) {
            assertEquals(42, second.transactionId(), "the id was in the committed superblock");
            String[] stale = second.ctl("message", "pool", "0", "set_transaction_id 41 43");
            assertEquals("1", stale[0]);
            assertTrue(stale[2].contains("current transaction id is 42"), stale[2]);
            second.ok("message", "pool", "0", "set_transaction_id 42 43");
            assertEquals(43, second.transactionId());
            second.ok("message", "pool", "0", "delete 2");
        }
    }
}
