package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * fio's nbd engine with {@code verify=crc32c} through a linear target over a file, once with
 * direct issue on (the connection's reader serves idle-queue READs and WRITEs itself) and once with
 * every bio queued for the file's I/O tasks ({@code direct-issue=legacy}): every block verifies
 * either way, and the kernel's counter shows which path served them (reads into pages, not by
 * reference, so the READs take the path under test too).
 */
class DirectIssueFioTest {

    private static final long PROGRAM_SECONDS_MAX = 120;

    @org.junit.jupiter.api.io.TempDir
    Path tmp;

    @ParameterizedTest
    @ValueSource(strings = {"on", "legacy"})
    void fioVerifiesThroughBothSubmissionPaths(String directIssue) throws Exception {
        assumeTrue(Programs.installed("fio"), "fio is not installed");
        Path file = tmp.resolve("stack.yaml");
        Files.writeString(file, """
                memory: 64MiB
                devices:
                  a: { file: data/a.img, size: 64MiB }
                mapped:
                  default: |
                    0 131072 linear a 0
                exports:
                  default: { device: default }
                """);
        StackConfig config = StackConfig.load(file);
        Policies policies = Policies.defaults().with(PolicySwitch.DIRECT_ISSUE, directIssue)
                .with(PolicySwitch.READ_REFERENCES, PolicySwitch.LEGACY);
        try (TestKernel tk = new TestKernel("direct-fio", config.memoryBytes(), policies, Faults.NONE)) {
            ServedStack.serve(tk, config, (port, stack) -> {
                String uri = "nbd://127.0.0.1:" + port + "/default";
                String random = Programs.run(tmp, PROGRAM_SECONDS_MAX, Programs.fioVerify("verify4k", uri, "4k", "32m"));
                String sequential = Programs.run(tmp, PROGRAM_SECONDS_MAX, "fio", "--name=verify1m", "--ioengine=nbd",
                        "--uri=" + uri, "--rw=write", "--bs=1m", "--size=64m", "--verify=crc32c", "--iodepth=8",
                        "--do_verify=1", "--verify_fatal=1");
                for (String out : new String[] {random, sequential}) {
                    assertFalse(out.toLowerCase().contains("verify: bad") || out.contains("crc32c: verify failed"), out);
                    assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);
                }
                long direct = tk.kernel.counters().value("file.direct-issues");
                if (directIssue.equals("on")) {
                    assertTrue(direct > 0, "no bio was issued directly");
                } else {
                    assertEquals(0, direct, "bios were issued directly under direct-issue=legacy");
                }
            });
        }
    }
}
