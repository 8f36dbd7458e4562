/* Return codes: the same values as esp_err_t so the ESP-IDF port can pass them through. */
#ifndef FA_ERR_H
#define FA_ERR_H

typedef int fa_err_t;

#define FA_OK                  0
#define FA_FAIL               -1
#define FA_ERR_NO_MEM          0x101
#define FA_ERR_INVALID_ARG     0x102
#define FA_ERR_INVALID_STATE   0x103
#define FA_ERR_INVALID_SIZE    0x104
#define FA_ERR_NOT_FOUND       0x105
#define FA_ERR_NOT_SUPPORTED   0x106
#define FA_ERR_TIMEOUT         0x107
#define FA_ERR_INVALID_RESPONSE 0x108
#define FA_ERR_INVALID_CRC     0x109
#define FA_ERR_INVALID_VERSION 0x10A
/* OTA refusals (esp_err_t has ESP_ERR_OTA_BASE 0x1500). */
#define FA_ERR_OTA_BASE        0x1500
#define FA_ERR_OTA_VALIDATE_FAILED (FA_ERR_OTA_BASE + 0x03)

#endif
