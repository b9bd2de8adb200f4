package io.blkstack.dm.crypt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.FaultyDisk;
import io.blkstack.dm.TargetTestIo;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.dm.crypt.XtsCipher;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The crypt target: XTS-AES against the IEEE 1619-2007 Annex B known answers, ciphertext on the
 * backing device that differs from the plaintext and matches an independent XTS computation with
 * the documented IV rule, round trips through the mapped device for several unit sizes and IV
 * offsets with segments cut inside sectors, untouched plaintext pages, and the table round trip.
 */
class CryptTargetTest {

    private static final HexFormat HEX = HexFormat.of();
    private static final String KEY256 = "27182818284590452353602874713526" + "31415926535897932384626433832795";
    private static final String KEY512 = "2718281828459045235360287471352662497757247093699959574966967627"
            + "3141592653589793238462643383279502884197169399375105820974944592";
    /** Sectors of the backing device. */
    private static final int DISK_SECTORS = 2048;

    private static byte[] hex(String s) {
        return HEX.parseHex(s);
    }

    /** 00..ff twice: the 512-byte plaintext of vectors 4 and 10. */
    private static byte[] counting512() {
        byte[] p = new byte[512];
        for (int i = 0; i < p.length; i++) {
            p[i] = (byte) i;
        }
        return p;
    }

    private static final String V4_CT = "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c"
            + "c78cf7f5e543445f8333d8fa7f56000005279fa5d8b5e4ad40e736ddb4d35412"
            + "328063fd2aab53e5ea1e0a9f332500a5df9487d07a5c92cc512c8866c7e860ce"
            + "93fdf166a24912b422976146ae20ce846bb7dc9ba94a767aaef20c0d61ad0265"
            + "5ea92dc4c4e41a8952c651d33174be51a10c421110e6d81588ede82103a252d8"
            + "a750e8768defffed9122810aaeb99f9172af82b604dc4b8e51bcb08235a6f434"
            + "1332e4ca60482a4ba1a03b3e65008fc5da76b70bf1690db4eae29c5f1badd03c"
            + "5ccf2a55d705ddcd86d449511ceb7ec30bf12b1fa35b913f9f747a8afd1b130e"
            + "94bff94effd01a91735ca1726acd0b197c4e5b03393697e126826fb6bbde8ecc"
            + "1e08298516e2c9ed03ff3c1b7860f6de76d4cecd94c8119855ef5297ca67e9f3"
            + "e7ff72b1e99785ca0a7e7720c5b36dc6d72cac9574c8cbbc2f801e23e56fd344"
            + "b07f22154beba0f08ce8891e643ed995c94d9a69c9f1b5f499027a78572aeebd"
            + "74d20cc39881c213ee770b1010e4bea718846977ae119f7a023ab58cca0ad752"
            + "afe656bb3c17256a9f6e9bf19fdd5a38fc82bbe872c5539edb609ef4f79c203e"
            + "bb140f2e583cb2ad15b4aa5b655016a8449277dbd477ef2c8d6c017db738b18d"
            + "eb4a427d1923ce3ff262735779a418f20a282df920147beabe421ee5319d0568";

    private static final String V5_CT = "264d3ca8512194fec312c8c9891f279fefdd608d0c027b60483a3fa811d65ee5"
            + "9d52d9e40ec5672d81532b38b6b089ce951f0f9c35590b8b978d175213f329bb"
            + "1c2fd30f2f7f30492a61a532a79f51d36f5e31a7c9a12c286082ff7d2394d18f"
            + "783e1a8e72c722caaaa52d8f065657d2631fd25bfd8e5baad6e527d763517501"
            + "c68c5edc3cdd55435c532d7125c8614deed9adaa3acade5888b87bef641c4c99"
            + "4c8091b5bcd387f3963fb5bc37aa922fbfe3df4e5b915e6eb514717bdd2a7407"
            + "9a5073f5c4bfd46adf7d282e7a393a52579d11a028da4d9cd9c77124f9648ee3"
            + "83b1ac763930e7162a8d37f350b2f74b8472cf09902063c6b32e8c2d9290cefb"
            + "d7346d1c779a0df50edcde4531da07b099c638e83a755944df2aef1aa31752fd"
            + "323dcb710fb4bfbb9d22b925bc3577e1b8949e729a90bbafeacf7f7879e7b114"
            + "7e28ba0bae940db795a61b15ecf4df8db07b824bb062802cc98a9545bb2aaeed"
            + "77cb3fc6db15dcd7d80d7d5bc406c4970a3478ada8899b329198eb61c193fb62"
            + "75aa8ca340344a75a862aebe92eee1ce032fd950b47d7704a3876923b4ad6284"
            + "4bf4a09c4dbe8b4397184b7471360c9564880aedddb9baa4af2e75394b08cd32"
            + "ff479c57a07d3eab5d54de5f9738b8d27f27a9f0ab11799d7b7ffefb2704c95c"
            + "6ad12c39f1e867a4b7b1d7818a4b753dfd2a89ccb45e001a03a867b187f225dd";

    private static final String V10_CT = "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
            + "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd"
            + "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
            + "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca"
            + "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0"
            + "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
            + "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec"
            + "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a"
            + "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1"
            + "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae"
            + "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29"
            + "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac"
            + "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f"
            + "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385"
            + "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa"
            + "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";

    /** Encrypts {@code plain} as unit {@code unit} and checks the answer both ways. */
    private static void known(String key, long unit, byte[] plain, String cipherHex) {
        XtsCipher xts = new XtsCipher(hex(key));
        byte[] buf = plain.clone();
        xts.encrypt(buf, 0, buf.length, unit);
        assertEquals(cipherHex, HEX.formatHex(buf), "encrypt unit " + unit);
        xts.decrypt(buf, 0, buf.length, unit);
        assertArrayEquals(plain, buf, "decrypt unit " + unit);
    }

    @Test
    void ieee1619Vector1() {
        known("00".repeat(32), 0, new byte[32], "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e");
    }

    @Test
    void ieee1619Vector2() {
        byte[] p = new byte[32];
        Arrays.fill(p, (byte) 0x44);
        known("11".repeat(16) + "22".repeat(16), 0x3333333333L, p,
                "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0");
    }

    @Test
    void ieee1619Vector3() {
        byte[] p = new byte[32];
        Arrays.fill(p, (byte) 0x44);
        known("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0" + "22".repeat(16), 0x3333333333L, p,
                "af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89");
    }

    @Test
    void ieee1619Vector4() {
        known(KEY256, 0, counting512(), V4_CT);
    }

    @Test
    void ieee1619Vector5() {
        // Vector 5 encrypts vector 4's ciphertext as data unit 1.
        known(KEY256, 1, hex(V4_CT), V5_CT);
    }

    @Test
    void ieee1619Vector10Aes256() {
        known(KEY512, 0xff, counting512(), V10_CT);
    }

    @Test
    void rejectsBadKeysAndUnits() {
        assertThrows(IllegalArgumentException.class, () -> new XtsCipher(new byte[16]));
        XtsCipher xts = new XtsCipher(new byte[32]);
        assertThrows(IllegalArgumentException.class, () -> xts.encrypt(new byte[40], 0, 40, 0));
        assertThrows(IllegalArgumentException.class, () -> xts.encrypt(new byte[8192], 0, 8192, 0));
    }

    /** A kernel with one backing disk {@code c}, a client bio set and synchronous I/O. */
    private static final class World implements AutoCloseable {
        final TestKernel tk = new TestKernel("crypt", 32L << 20, Policies.defaults(), Faults.NONE);
        final Map<String, BlockDevice> devices = new HashMap<>();
        final FaultyDisk disk = new FaultyDisk(tk.kernel, "c", DISK_SECTORS);
        final BioSet client = new BioSet(tk.kernel, "client", 4, 4, null, false);
        final TargetTestIo io = new TargetTestIo(tk.kernel, client);

        World() {
            devices.put("c", disk);
        }

        Table table(String text) throws TableException {
            return Table.parse(tk.kernel, "dm", text, devices::get);
        }

        MappedDevice mapped(String text) throws TableException {
            return new MappedDevice(tk.kernel, "dm", table(text));
        }

        @Override
        public void close() {
            tk.close();
        }
    }

    @ParameterizedTest(name = "sector_size {0}, iv_offset {1}, large {2}")
    @CsvSource({"512, 0, false", "512, 77, false", "1024, 8, false", "4096, 0, false", "4096, 16, false",
            "4096, 24, true", "2048, 4, true"})
    void roundTripAndCiphertextOnDisk(int unit, long ivOffset, boolean large) throws TableException {
        long offset = 64;
        int length = 1024;
        String opts = unit == 512 && !large ? "" : " " + ((unit != 512 ? 1 : 0) + (large ? 1 : 0))
                + (unit != 512 ? " sector_size:" + unit : "") + (large ? " iv_large_sectors" : "");
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 " + length + " crypt aes-xts-plain64 " + KEY512 + " " + ivOffset + " c "
                    + offset + opts + "\n");
            int unitSectors = unit / 512;
            byte[] model = new byte[length * 512];
            Random random = new Random(unit * 31L + ivOffset);
            XtsCipher xts = new XtsCipher(hex(KEY512));
            // Unwritten ciphertext decrypts to noise: start from a device written with zeros.
            assertEquals(BioStatus.OK, w.io.write(md, 0, new byte[model.length], null));
            for (int i = 0; i < 30; i++) {
                int units = length / unitSectors;
                int first = random.nextInt(units);
                int count = 1 + random.nextInt(Math.min(units - first, Math.max(1, 300 / unitSectors)));
                long sector = (long) first * unitSectors;
                byte[] data = new byte[count * unit];
                random.nextBytes(data);
                byte[] after = new byte[data.length];
                assertEquals(BioStatus.OK, w.io.write(md, sector, data, random, after), "write " + sector);
                assertArrayEquals(data, after, "the plaintext pages were not modified");
                System.arraycopy(data, 0, model, (int) sector * 512, data.length);
                byte[] back = new byte[data.length];
                assertEquals(BioStatus.OK, w.io.read(md, sector, back, random));
                assertArrayEquals(data, back, "read back " + sector + "+" + count * unitSectors);
                // On the disk: not the plaintext, and exactly XTS with the documented IV of each unit.
                byte[] raw = w.disk.contents(offset + sector, count * unitSectors);
                assertFalse(Arrays.equals(data, raw), "ciphertext differs from plaintext");
                for (int u = 0; u < count; u++) {
                    long s = sector + (long) u * unitSectors + ivOffset;
                    long iv = large ? s / unitSectors : s;
                    byte[] unitPlain = Arrays.copyOfRange(data, u * unit, (u + 1) * unit);
                    xts.encrypt(unitPlain, 0, unit, iv);
                    assertArrayEquals(unitPlain, Arrays.copyOfRange(raw, u * unit, (u + 1) * unit), "unit " + u);
                }
            }
            byte[] whole = new byte[model.length];
            assertEquals(BioStatus.OK, w.io.read(md, 0, whole, null));
            assertArrayEquals(model, whole, "whole device against the model");
            assertEquals(0, md.inFlight());
            md.close();
        }
    }

    @Test
    void largeWriteGoesDownInPiecesAndReadsBack() throws TableException {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 2048 crypt aes-xts-plain64 " + KEY256 + " 0 c 0\n");
            byte[] data = new byte[1 << 20]; // 256 pages: 16 pieces of 16 pool pages
            new Random(5).nextBytes(data);
            assertEquals(BioStatus.OK, w.io.write(md, 0, data, null));
            byte[] back = new byte[data.length];
            assertEquals(BioStatus.OK, w.io.read(md, 0, back, null));
            assertArrayEquals(data, back);
            CryptTarget t = (CryptTarget) md.table().target(0);
            assertTrue(t.statusInfo().contains("pieces 16"), t.statusInfo());
            md.close();
        }
    }

    @Test
    void misalignedBioIsKilled() throws TableException {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 crypt aes-xts-plain64 " + KEY256 + " 0 c 0 1 sector_size:4096\n");
            assertEquals(BioStatus.IOERR, w.io.write(md, 4, new byte[4096], null));
            assertEquals(BioStatus.IOERR, w.io.read(md, 0, new byte[512], null));
            md.close();
        }
    }

    @Test
    void lowerReadErrorReachesTheCaller() throws TableException {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 crypt aes-xts-plain64 " + KEY256 + " 0 c 0\n");
            w.disk.failAfter(0);
            assertEquals(BioStatus.IOERR, w.io.read(md, 0, new byte[4096], null));
            assertEquals(BioStatus.IOERR, w.io.write(md, 0, new byte[4096], null));
            md.close();
        }
    }

    @Test
    void tableRoundTripsWithKeyButInfoHidesIt() throws TableException {
        try (World w = new World()) {
            String line = "0 1024 crypt aes-xts-plain64 " + KEY512 + " 7 c 8 2 sector_size:4096 iv_large_sectors";
            MappedDevice md = w.mapped(line + "\n");
            assertEquals(List.of(line), md.status(StatusForm.TABLE));
            try (Table again = w.table(String.join("\n", md.status(StatusForm.TABLE)))) {
                assertEquals(md.status(StatusForm.TABLE), again.lines());
            }
            String info = md.status(StatusForm.INFO).get(0);
            assertFalse(info.toLowerCase().contains(KEY512.substring(0, 16)), info);
            assertTrue(info.contains("sector_size:4096"), info);
            md.close();
        }
    }

    @Test
    void badArgumentsAreNamed() {
        try (World w = new World()) {
            String[][] cases = {
                {"0 8 crypt aes-cbc-essiv:sha256 " + KEY256 + " 0 c 0", "argument 1"},
                {"0 8 crypt aes-xts-plain64 abcd 0 c 0", "argument 2"},
                {"0 8 crypt aes-xts-plain64 " + KEY256.replace('7', 'x') + " 0 c 0", "argument 2"},
                {"0 8 crypt aes-xts-plain64 " + KEY256 + " 0 nosuch 0", "argument 4"},
                {"0 8 crypt aes-xts-plain64 " + KEY256 + " 0 c 0 1 sector_size:1000", "argument 7"},
                {"0 8 crypt aes-xts-plain64 " + KEY256 + " 0 c 0 1 same_cpu", "argument 7"},
                {"0 12 crypt aes-xts-plain64 " + KEY256 + " 0 c 0 1 sector_size:4096", "multiple"},
                {"0 8 crypt aes-xts-plain64 " + KEY256 + " 0 c 2047", "argument 5"},
            };
            for (String[] c : cases) {
                TableException e = assertThrows(TableException.class, () -> w.table(c[0]), c[0]);
                assertTrue(e.getMessage().contains(c[1]), c[0] + " -> " + e.getMessage());
                assertFalse(e.getMessage().contains(KEY256.substring(0, 20)), "key in error: " + e.getMessage());
            }
        }
    }
}
