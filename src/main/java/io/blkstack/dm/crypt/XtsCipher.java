package io.blkstack.dm.crypt;

import java.security.GeneralSecurityException;
import javax.crypto.Cipher;
import javax.crypto.spec.SecretKeySpec;

/**
 * XTS-AES (IEEE 1619-2007) over the JDK's AES block primitive ({@code AES/ECB/NoPadding}): the
 * key is split in two halves, {@code K1} encrypts the data and {@code K2} encrypts the tweak.
 * For data unit {@code n} the tweak is {@code T = AES_K2(n as 16 little-endian bytes)} (the
 * {@code plain64} IV of dm-crypt); block {@code j} is {@code C = AES_K1(P xor T_j) xor T_j} with
 * {@code T_{j+1} = T_j * alpha} in GF(2^128). Data units are whole 16-byte blocks, so ciphertext
 * stealing is not needed.
 *
 * <p>Why a per-instance scratch: a unit is done with one ECB call over the whole unit (tweaks are
 * computed first into a scratch buffer), which is much faster than one call per block; the
 * scratch and the JDK cipher objects make an instance single-threaded. Each worker that encrypts
 * owns its own instance, allocated up front: nothing is allocated per I/O.
 */
public final class XtsCipher {

    /** The AES block and the XTS tweak size. */
    public static final int BLOCK_SIZE = 16;
    /** The largest data unit one call handles (a page, the largest dm-crypt sector size). */
    public static final int UNIT_BYTES_MAX = 4096;

    private final Cipher dataEncrypt;
    private final Cipher dataDecrypt;
    private final Cipher tweakEncrypt;
    private final byte[] tweaks = new byte[UNIT_BYTES_MAX];
    private final byte[] tweak = new byte[BLOCK_SIZE];

    /**
     * Sets up XTS with {@code key} = {@code K1 || K2}: 32 bytes for XTS-AES-128, 64 bytes for
     * XTS-AES-256.
     */
    public XtsCipher(byte[] key) {
        if (key == null || (key.length != 32 && key.length != 64)) {
            throw new IllegalArgumentException("XTS-AES key must be 32 or 64 bytes, got "
                    + (key == null ? "null" : key.length));
        }
        int half = key.length / 2;
        SecretKeySpec k1 = new SecretKeySpec(key, 0, half, "AES");
        SecretKeySpec k2 = new SecretKeySpec(key, half, half, "AES");
        try {
            dataEncrypt = Cipher.getInstance("AES/ECB/NoPadding");
            dataEncrypt.init(Cipher.ENCRYPT_MODE, k1);
            dataDecrypt = Cipher.getInstance("AES/ECB/NoPadding");
            dataDecrypt.init(Cipher.DECRYPT_MODE, k1);
            tweakEncrypt = Cipher.getInstance("AES/ECB/NoPadding");
            tweakEncrypt.init(Cipher.ENCRYPT_MODE, k2);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("the JDK has no usable AES/ECB/NoPadding", e);
        }
    }

    /** Encrypts {@code length} bytes at {@code offset} of {@code buf} in place as data unit {@code unit}. */
    public void encrypt(byte[] buf, int offset, int length, long unit) {
        crypt(buf, offset, length, unit, dataEncrypt);
    }

    /** Decrypts {@code length} bytes at {@code offset} of {@code buf} in place as data unit {@code unit}. */
    public void decrypt(byte[] buf, int offset, int length, long unit) {
        crypt(buf, offset, length, unit, dataDecrypt);
    }

    /** XEX over one data unit with the given block direction. */
    private void crypt(byte[] buf, int offset, int length, long unit, Cipher block) {
        if (length <= 0 || length % BLOCK_SIZE != 0 || length > UNIT_BYTES_MAX) {
            throw new IllegalArgumentException("XTS data unit of " + length + " bytes: must be a positive multiple of "
                    + BLOCK_SIZE + " up to " + UNIT_BYTES_MAX);
        }
        if (offset < 0 || offset + length > buf.length) {
            throw new IllegalArgumentException("XTS unit " + offset + "+" + length + " outside a buffer of " + buf.length);
        }
        computeTweaks(unit, length);
        xor(buf, offset, length);
        try {
            int done = block.update(buf, offset, length, buf, offset);
            if (done != length) {
                throw new IllegalStateException("AES/ECB produced " + done + " of " + length + " bytes");
            }
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES/ECB failed on " + length + " bytes", e);
        }
        xor(buf, offset, length);
    }

    /** Fills {@code tweaks} with T_0 .. T_{n-1} for the unit: T_0 = AES_K2(plain64 IV), then times alpha. */
    private void computeTweaks(long unit, int length) {
        for (int i = 0; i < BLOCK_SIZE; i++) {
            tweak[i] = i < 8 ? (byte) (unit >>> (8 * i)) : 0;
        }
        try {
            tweakEncrypt.update(tweak, 0, BLOCK_SIZE, tweaks, 0);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES/ECB failed on the tweak", e);
        }
        for (int pos = BLOCK_SIZE; pos < length; pos += BLOCK_SIZE) {
            multiplyByAlpha(tweaks, pos - BLOCK_SIZE, pos);
        }
    }

    /**
     * {@code dst = src * alpha} in GF(2^128) with the XTS byte order: a little-endian 128-bit
     * shift left by one, folding the carry out of the top bit back as {@code 0x87}.
     */
    static void multiplyByAlpha(byte[] t, int src, int dst) {
        int carry = 0;
        for (int i = 0; i < BLOCK_SIZE; i++) {
            int b = t[src + i] & 0xff;
            t[dst + i] = (byte) ((b << 1) | carry);
            carry = b >>> 7;
        }
        if (carry != 0) {
            t[dst] ^= (byte) 0x87;
        }
    }

    /** XORs the unit with the computed tweaks. */
    private void xor(byte[] buf, int offset, int length) {
        byte[] t = tweaks;
        for (int i = 0; i < length; i++) {
            buf[offset + i] ^= t[i];
        }
    }
}
