#ifndef HF_TOOLS_H
#define HF_TOOLS_H

#include <stdint.h>

#include "hf_flash.h"

uint32_t hf_efuse_read(const hf_flash_t *f);
void hf_efuse_write(const hf_flash_t *f, uint32_t secver);
int hf_usage(void);
int hf_cmd_mkimage(int argc, char **argv);
int hf_cmd_flash(int argc, char **argv);
int hf_cmd_info(int argc, char **argv);

#endif
