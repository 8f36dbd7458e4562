/* fleet-device's offline commands: mkimage, flash, info; and the virtual eFuse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hf_tools.h"

#define EFUSE_MAGIC 0x46555345u /* virtual eFuse (secure_version) kept in the phy_init sector */

uint32_t hf_efuse_read(const hf_flash_t *f)
{
    uint32_t v[2];
    if (f->read(f->ctx, HF_PHY_OFF, v, sizeof(v)) != 0 || v[0] != EFUSE_MAGIC) {
        return 0;
    }
    return v[1];
}

void hf_efuse_write(const hf_flash_t *f, uint32_t secver)
{
    uint32_t v[2] = { EFUSE_MAGIC, secver };
    f->write(f->ctx, HF_PHY_OFF, v, sizeof(v));
}

int hf_usage(void)
{
    fprintf(stderr,
            "usage: fleet-device run --flash F --id ID --hw HW [--broker mqtt://h:p] [--prefix P]\n"
            "         [--key HEX | --master-key HEX] [--ecdsa-pub PEM] [--hb S] [--confirm S]\n"
            "         [--kid KID] [--add-key KID:MASTERHEX]... [--retire-kid KID]... [--ca PEM]\n"
            "         [--shadow-key K]... [--chatter-ms N] [--log-rate N] [--log-burst N]\n"
            "       fleet-device mkimage --out F --version V [--secure-version N] [--selftest ok|crash|offline] [--size N]\n"
            "       fleet-device flash --flash F --slot N IMAGE\n"
            "       fleet-device info --flash F\n");
    return 2;
}

int hf_cmd_mkimage(int argc, char **argv)
{
    const char *out = NULL, *version = NULL, *project = "fleet-host";
    uint32_t secver = 0;
    size_t size = 65536;
    hf_selftest_t st = HF_SELFTEST_OK;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else if (!strcmp(argv[i], "--version")) version = argv[i + 1];
        else if (!strcmp(argv[i], "--project")) project = argv[i + 1];
        else if (!strcmp(argv[i], "--secure-version")) secver = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--selftest")) st = !strcmp(argv[i + 1], "crash") ? HF_SELFTEST_CRASH
                                                     : !strcmp(argv[i + 1], "offline") ? HF_SELFTEST_OFFLINE
                                                                                       : HF_SELFTEST_OK;
        else return hf_usage();
    }
    if (!out || !version || size > HF_SLOT_SIZE) {
        return hf_usage();
    }
    uint8_t *buf = malloc(HF_SLOT_SIZE);
    int n = buf ? hf_image_make(buf, HF_SLOT_SIZE, version, secver, project, st, size) : -1;
    FILE *f = n > 0 ? fopen(out, "wb") : NULL;
    if (!f || fwrite(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "mkimage failed\n");
        return 1;
    }
    fclose(f);
    free(buf);
    return 0;
}

int hf_cmd_flash(int argc, char **argv)
{
    hf_flash_t fl;
    if (argc != 7 || strcmp(argv[2], "--flash") || strcmp(argv[4], "--slot")) {
        return hf_usage();
    }
    int slot = atoi(argv[5]);
    FILE *img = fopen(argv[6], "rb");
    uint8_t *buf = malloc(HF_SLOT_SIZE);
    size_t n = img && buf ? fread(buf, 1, HF_SLOT_SIZE, img) : 0;
    if (n == 0 || slot < 0 || slot > 1 || hf_file_open(&fl, argv[3]) != 0) {
        fprintf(stderr, "flash: cannot read image or open flash\n");
        return 1;
    }
    fclose(img);
    int rc = fl.erase(fl.ctx, hf_slot_off(slot), HF_SLOT_SIZE) || fl.write(fl.ctx, hf_slot_off(slot), buf, n);
    hf_file_close(&fl);
    free(buf);
    return rc ? 1 : 0;
}

int hf_cmd_info(int argc, char **argv)
{
    hf_flash_t fl;
    hf_ota_entry_t ot[2];
    if (argc != 4 || strcmp(argv[2], "--flash") || hf_file_open(&fl, argv[3]) != 0 || hf_read_otadata(&fl, ot)) {
        return hf_usage();
    }
    printf("{\"otadata\":[");
    for (int i = 0; i < 2; i++) {
        printf("%s{\"seq\":%u,\"state\":%u,\"crc_ok\":%s}", i ? "," : "", ot[i].ota_seq, ot[i].ota_state,
               ot[i].crc == hf_ota_select_crc(&ot[i]) ? "true" : "false");
    }
    printf("],\"active\":%d,\"slots\":[", hf_get_active_otadata(ot));
    for (int s = 0; s < 2; s++) {
        hf_image_info_t info;
        if (hf_image_check(&fl, hf_slot_off(s), HF_SLOT_SIZE, &info) == 0) {
            printf("%s{\"version\":\"%s\",\"secure_version\":%u}", s ? "," : "", info.version, info.secure_version);
        } else {
            printf("%snull", s ? "," : "");
        }
    }
    printf("],\"efuse_secure_version\":%u}\n", hf_efuse_read(&fl));
    hf_file_close(&fl);
    return 0;
}
